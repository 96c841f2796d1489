"""Stamping the top Via with where a request came from keeps it where it was."""

from __future__ import annotations

from expertline.sip.checks import stamp_via
from expertline.sip.message import parse_message, parse_via
from expertline.sip.transport import Peer


def test_the_stamped_via_stays_first_and_the_others_follow() -> None:
    raw = (
        b"BYE sip:1001@10.0.0.5 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKa;rport, SIP/2.0/UDP 10.8.8.8;branch=z9hG4bKb\r\n"
        b"Via: SIP/2.0/TCP 10.7.7.7;branch=z9hG4bKc\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\n"
        b"Call-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    request = parse_message(raw)
    via = parse_via(request.headers.get("Via") or "")
    stamp_via(request, Peer("udp", "192.0.2.1", 6000), via)  # type: ignore[arg-type]
    names = [name for name, _ in request.headers]
    assert names[:2] == ["Via", "Via"] and "Via" not in names[2:]
    vias = request.headers.get_all("Via")
    stamped = parse_via(vias[0]).params
    assert (stamped["received"], stamped["rport"]) == ("192.0.2.1", "6000")
    assert [parse_via(v).branch for v in vias] == ["z9hG4bKa", "z9hG4bKb", "z9hG4bKc"]
