"""Request bodies: what counts as JSON and how it is decoded, the same for every route.

JSON is decoded strictly (RFC 8259): ``NaN``, ``Infinity`` and ``-Infinity`` are not numbers,
a number too large for a double is refused, text must be UTF-8 without lone surrogates, and
nesting is bounded (no request of this API nests deeper than a few levels). A body that breaks
these rules is refused with one line that says why and where ("body is not valid JSON:
unexpected end of data at line 1 column 8"), before anything else is done with it.
"""

from __future__ import annotations

from typing import Any

import orjson

from expertline.errors import InvalidInput, Problem
from expertline.limits import MAX_NESTING as MAX_DEPTH


def is_json(content_type: str | bytes | None) -> bool:
    """Whether a ``Content-Type`` value announces JSON (``application/json``, ``+json``)."""
    if content_type is None:
        return False
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def not_json_problem(content_type: str | None) -> InvalidInput:
    """The refusal of a body that was not sent as JSON."""
    given = f"Content-Type: {clip_type(content_type)}" if content_type else "no Content-Type"
    return InvalidInput(
        f"the body must be JSON sent with Content-Type: application/json (this one has {given})",
        [Problem("", "send the body with Content-Type: application/json")],
    )


def clip_type(content_type: str) -> str:
    return content_type if len(content_type) <= 80 else content_type[:80] + "…"


def decode_json(body: bytes) -> Any:
    """The JSON value of ``body``, or InvalidInput saying what is wrong and where."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _invalid(_reason(exc.msg, body, exc.pos), exc.lineno, exc.colno) from None
    _check_depth(value, body)
    return value


def _reason(message: str, body: bytes, pos: int) -> str:
    if message.startswith("unexpected character") or message == "no digit after sign":
        token = body[pos : pos + 9].lstrip(b"-")
        if token.startswith((b"NaN", b"Infinity")):
            return "NaN and Infinity are not JSON numbers"
    if message == "depth limit exceeded":
        return f"nested more than {MAX_DEPTH} levels deep"
    if message.startswith("str is not valid UTF-8"):
        return "not UTF-8 text"
    if message.startswith("number is infinity"):
        return "a number too large for a double"
    return message


def _invalid(reason: str, line: int, column: int) -> InvalidInput:
    where = f"line {line} column {column}"
    return InvalidInput(
        f"body is not valid JSON: {reason} at {where}", [Problem("", f"{reason} at {where}")]
    )


def _check_depth(value: Any, body: bytes) -> None:
    """Refuse nesting beyond ``MAX_DEPTH`` (iteratively: no recursion on hostile input)."""
    if not isinstance(value, dict | list):
        return
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > MAX_DEPTH:
            line, column = _deep_position(body)
            raise _invalid(f"nested more than {MAX_DEPTH} levels deep", line, column)
        deeper: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            deeper.extend(c for c in children if isinstance(c, dict | list))
        level = deeper
        depth += 1


def _deep_position(body: bytes) -> tuple[int, int]:
    """Line and column where nesting first goes past ``MAX_DEPTH`` (strings skipped)."""
    depth = 0
    line, start = 1, 0
    in_string = escaped = False
    for pos, byte in enumerate(body):
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                return line, pos - start + 1
        elif byte in (0x5D, 0x7D):
            depth -= 1
        if byte == 0x0A:
            line, start = line + 1, pos + 1
    return line, 1
