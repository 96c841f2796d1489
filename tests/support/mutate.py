"""Seeded mutation of valid inputs, for fuzzing parsers behind real servers.

Each mutant is a valid sample with a few random edits: bit flips, bytes replaced by ones that
parsers care about (separators, line ends, quotes, NUL, high bytes), insertions of long runs
and large numbers, deletions, duplicated or swapped lines, truncation, and splices of two
samples. The generator is ``random.Random(seed)``: a failure names its seed and index, and
the same seed gives the same inputs again.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator

SEED = int(os.environ.get("EXPERTLINE_FUZZ_SEED", "20261205"))
INTERESTING = [
    b"\x00",
    b"\xff",
    b"\r",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"=",
    b"<",
    b">",
    b'"',
    b"\\",
    b"%",
    b"#",
    b"+",
    b"@",
    b"/",
    b"[",
    b"]",
    b"\xc3\xa9",
    b"\xed\xa0\x80",
    b"\xe2\x80\xa8",
    b"-1",
    b"0",
    b"99999999999999999999",
    b"1e999",
    b"NaN",
]


def mutants(
    samples: list[bytes], rng: random.Random, count: int, edits: int = 3
) -> Iterator[bytes]:
    """``count`` mutants of ``samples``, each with 1..``edits`` edits."""
    for _ in range(count):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, edits)):
            data = bytearray(_edit(rng, bytes(data), samples))
        yield bytes(data)


def _edit(rng: random.Random, data: bytes, samples: list[bytes]) -> bytes:
    if not data:
        return rng.choice(INTERESTING)
    i = rng.randrange(len(data))
    j = min(len(data), i + rng.randint(1, 16))
    op: Callable[[], bytes] = rng.choice(
        [
            lambda: data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :],
            lambda: data[:i] + rng.choice(INTERESTING) + data[i + 1 :],
            lambda: data[:i] + rng.choice(INTERESTING) + data[i:],
            lambda: data[:i] + bytes([rng.randrange(256)]) * rng.randint(1, 300) + data[i:],
            lambda: data[:i] + data[j:],
            lambda: data[:j] + data[i:j] * rng.randint(1, 50) + data[j:],
            lambda: data[:i],
            lambda: _lines(rng, data),
            lambda: data[:i] + rng.choice(samples)[i:],
        ]
    )
    return op()


def _lines(rng: random.Random, data: bytes) -> bytes:
    """Duplicate, drop or swap whole lines (headers)."""
    lines = data.split(b"\r\n")
    if len(lines) < 2:
        return data + data
    a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
    choice = rng.randrange(3)
    if choice == 0:
        lines.insert(a, lines[b])
    elif choice == 1:
        del lines[a]
    else:
        lines[a], lines[b] = lines[b], lines[a]
    return b"\r\n".join(lines)


def xml_text(data: bytes) -> str:
    """``data`` as text an XMPP message can carry (XML 1.0 characters only)."""
    text = data.decode("utf-8", "replace")
    return "".join(
        ch
        for ch in text
        if ch in "\t\n\r"
        or ("\x20" <= ch <= "\ud7ff")
        or ("\ue000" <= ch <= "\ufffd")
        or ch > "\uffff"
    )
