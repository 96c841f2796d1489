"""Coverage-guided fuzzing of the SIP parser with atheris (run by test_sip_fuzz.py, bounded).

Any exception other than ``ParseError`` is a crash; atheris then writes the input and exits
non-zero. Whatever parses must serialize and parse back to the same message.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from expertline.sip.message import (
        ParseError,
        StreamFramer,
        parse_message,
        parse_name_addr,
        parse_uri,
        parse_via,
    )


def one_input(data: bytes) -> None:
    try:
        message = parse_message(data)
    except ParseError:
        message = None
    if message is not None:
        again = parse_message(message.to_bytes())
        if again != message:
            raise AssertionError(f"round trip changed the message: {data!r}")
        for _, value in message.headers:
            for parser in (parse_uri, parse_name_addr, parse_via):
                with contextlib.suppress(ParseError):
                    parser(value)
    with contextlib.suppress(ParseError):
        StreamFramer().feed(data)


SEED = (
    b"INVITE sip:+18005550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bKa\r\n"
    b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)

if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
