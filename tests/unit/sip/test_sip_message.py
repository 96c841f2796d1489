"""SIP message parsing and serialization: examples from RFC 3261/4475 shapes, properties, fuzz."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expertline.sip.message import (
    Headers,
    ParseError,
    Request,
    Response,
    StreamFramer,
    canonical_name,
    make_response,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_list,
    unescape,
)

INVITE = (
    b"INVITE sip:+18005550100@127.0.0.1:5060 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1:5061;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP proxy.example.test;branch=z9hG4bK1, SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bK2\r\n"
    b"Max-Forwards: 70\r\n"
    b't: "Billing, Spanish" <sip:+18005550100@example.test>\r\n'
    b"f: Caller <sip:+15551234567@example.test>;tag=1928301774\r\n"
    b"i: a84b4c76e66710@pc33.example.test\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"m: <sip:caller@10.0.0.1:5061>\r\n"
    b"X-Expertline-Account: 12345678\r\n"
    b"Subject: multi\r\n"
    b"  line folded\r\n"
    b"c: application/sdp\r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"v=0\r\nEXTRA"
)


def test_parses_compact_forms_multi_values_and_folding() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.uri == "sip:+18005550100@127.0.0.1:5060"
    assert msg.call_id == "a84b4c76e66710@pc33.example.test"
    assert msg.cseq.seq == 314159 and msg.cseq.method == "INVITE"
    vias = msg.headers.get_all("via")
    assert len(vias) == 3
    assert parse_via(vias[2]).host == "2001:db8::9" and parse_via(vias[2]).port == 5070
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert msg.top_via.params["rport"] is None
    assert msg.to.display == '"Billing, Spanish"'
    assert msg.from_.tag == "1928301774"
    assert msg.headers.get("Subject") == "multi line folded"
    assert msg.headers.get("Content-Type") == "application/sdp"
    # Content-Length cuts the datagram's body.
    assert msg.body == b"v=0\r"


def test_serialization_uses_long_names_and_recomputes_length() -> None:
    msg = parse_message(INVITE)
    data = msg.to_bytes()
    assert b"\r\nCall-ID: a84b4c76e66710@pc33.example.test\r\n" in data
    assert b"\r\nContent-Length: 4\r\n\r\nv=0\r" in data
    assert parse_message(data) == msg


def test_response_start_line_and_status() -> None:
    raw = (
        b"SIP/2.0 182 Queued\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (182, "Queued")


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b"", "no end of headers"),
        (b"INVITE sip:a@b SIP/2.0\r\n", "no end of headers"),
        (b"INVITE sip:a@b\r\n\r\n", "bad request line"),
        (b"INV(ITE sip:a@b SIP/2.0\r\n\r\n", "bad method"),
        (b"SIP/2.0 1000 Huge\r\n\r\n", "bad status code"),
        (b"SIP/3.0 200 OK\r\n\r\n", "unsupported version"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nBad Header\r\n\r\n", "bad header line"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n", "bad Content-Length"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nabc", "shorter"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nX: \xff\r\n\r\n", "UTF-8"),
        (b" continuation\r\n\r\n", "bad request line"),
    ],
)
def test_malformed_input_is_a_parse_error(raw: bytes, problem: str) -> None:
    with pytest.raises(ParseError, match=problem):
        parse_message(raw)


def test_uris() -> None:
    uri = parse_uri("sip:alice:secret@Example.TEST:5070;transport=TCP;lr?subject=x")
    assert (uri.user, uri.password, uri.host, uri.port) == ("alice", "secret", "example.test", 5070)
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.transport == "tcp"
    assert uri.headers == "subject=x"
    assert str(parse_uri("sip:[::1]:5060")) == "sip:[::1]:5060"
    tel = parse_uri("tel:+15551234567;phone-context=example.test")
    assert not tel.is_sip and tel.opaque == "+15551234567;phone-context=example.test"
    for bad in ("", "sip", "sip:", "sip:a@", "sip:a@h:99999", "sip:a b@h", "1sip:x"):
        with pytest.raises(ParseError):
            parse_uri(bad)


def test_name_addr_forms() -> None:
    a = parse_name_addr('"A, B" <sip:a@h;transport=udp>;tag=9')
    assert a.display == '"A, B"' and a.uri.params == {"transport": "udp"} and a.tag == "9"
    b = parse_name_addr("sip:a@h;tag=9")  # addr-spec: the parameter belongs to the header
    assert b.uri.params == {} and b.tag == "9"
    with pytest.raises(ParseError):
        parse_name_addr("<sip:a@h")
    with pytest.raises(ParseError):
        parse_name_addr("<sip:a@h> junk")


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"a,b" <sip:x@h;p=1,2>, <sip:y@h> ,') == [
        '"a,b" <sip:x@h;p=1,2>',
        "<sip:y@h>",
    ]


def test_cseq_and_via_errors() -> None:
    assert str(parse_cseq("1 INVITE")) == "1 INVITE"
    for bad in ("x INVITE", "1", "99999999999 INVITE", "1 IN VITE", "\u00b2 INVITE"):
        with pytest.raises(ParseError):
            parse_cseq(bad)
    for bad in ("SIP/2.0/UDP", "SIP/1.0/UDP h", "HTTP/2.0/UDP h", "SIP/2.0/UDP h:x"):
        with pytest.raises(ParseError):
            parse_via(bad)


def test_headers_editing() -> None:
    h = Headers([("Via", "a, b"), ("Route", "<sip:r1>"), ("Via", "c")])
    assert h.pop_first("Via") == "a"
    assert h.get_all("Via") == ["b", "c"]
    h.add_first("Via", "z")
    assert h.get_all("Via") == ["z", "b", "c"]
    h.set("Via", "only")
    assert h.get_all("Via") == ["only"] and h.get_all("Route") == ["<sip:r1>"]
    assert canonical_name("CALL-ID") == "Call-ID" and canonical_name("x-foo-bar") == "X-Foo-Bar"


def test_make_response_copies_dialog_headers_and_adds_tag() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    resp = make_response(req, 302, to_tag="abc", extra=[("Contact", "<sip:1001@h>")])
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert resp.to.tag == "abc"
    assert resp.headers.get("Contact") == "<sip:1001@h>"
    assert resp.reason == "Moved Temporarily"
    trying = make_response(req, 100)
    assert trying.to.tag is None


def test_stream_framer_cuts_by_content_length() -> None:
    msg = parse_message(INVITE).to_bytes()
    framer = StreamFramer()
    frames = []
    stream = b"\r\n\r\n" + msg + msg
    for i in range(0, len(stream), 7):
        frames += framer.feed(stream[i : i + 7])
    assert frames == [msg, msg]
    with pytest.raises(ParseError):
        StreamFramer().feed(b"OPTIONS sip:a SIP/2.0\r\nl: -1\r\n\r\n")


@pytest.mark.parametrize(
    "first, second",
    [
        ("Call-ID: a@h", "Call-ID: b@h"),
        ("Call-ID: a@h", "i: a@h"),  # the same header under its compact name
        ("CSeq: 1 OPTIONS", "CSeq: 2 OPTIONS"),
        ("Content-Length: 0", "l: 0"),
        ("From: <sip:a@h>;tag=1", "From: <sip:b@h>;tag=2"),
        ("To: <sip:a@h>", "t: <sip:a@h>"),
        ("Max-Forwards: 70", "Max-Forwards: 70"),
        ("Content-Type: application/sdp", "c: text/plain"),
    ],
)
def test_a_single_value_header_twice_is_a_parse_error(first: str, second: str) -> None:
    head = "OPTIONS sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
    raw = f"{head}{first}\r\n{second}\r\n\r\n".encode()
    with pytest.raises(ParseError, match="duplicate"):
        parse_message(raw)
    # List-valued headers may repeat.
    vias = head + "Via: SIP/2.0/UDP g;branch=z9hG4bK2\r\nRoute: <sip:a>\r\nRoute: <sip:b>\r\n"
    assert len(parse_message(f"{vias}\r\n".encode()).headers.get_all("Via")) == 2


def test_stream_framer_refuses_content_lengths_that_disagree() -> None:
    head = b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
    with pytest.raises(ParseError, match="disagree"):
        StreamFramer().feed(head + b"Content-Length: 0\r\nl: 4\r\n\r\nbody")
    # Agreeing lengths frame the message (the parser then refuses the duplicate with a 400).
    [frame] = StreamFramer().feed(head + b"Content-Length: 4\r\nl: 4\r\n\r\nbody")
    with pytest.raises(ParseError, match="duplicate Content-Length"):
        parse_message(frame, stream=True)


def test_unescape() -> None:
    assert unescape("%2B1800555%30100") == "+18005550100"
    assert unescape("%c3%a9t%C3%A9") == "été"
    assert unescape("plain+1") == "plain+1"
    for bad, why in [
        ("%2", "bad %-escape"),
        ("%g0", "bad %-escape"),
        ("%ff", "not UTF-8"),
        ("a%00b", "control character"),
        ("%0D%0A", "control character"),
    ]:
        with pytest.raises(ParseError, match=why):
            unescape(bad)


# --- properties ---------------------------------------------------------------------------------

TOKEN = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+~",
    min_size=1,
    max_size=12,
)
VALUE = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="\x7f"),
    max_size=40,
).map(str.strip)
HEADER_NAME = st.one_of(
    st.sampled_from(
        ["Via", "From", "To", "Call-ID", "CSeq", "Contact", "Subject", "X-Expertline-Tier"]
    ),
    TOKEN.map(lambda t: "X-" + t),
)


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    from expertline.sip.message import SINGLE_VALUED
    from expertline.sip.message import canonical_name as canon

    drawn = draw(st.lists(st.tuples(HEADER_NAME, VALUE), max_size=12))
    seen: set[str] = set()
    items = []
    for name, value in drawn:
        name = canon(name)
        if name == "Content-Length" or (name in SINGLE_VALUED and name in seen):
            continue  # serialization adds the length; single-value headers appear once
        seen.add(name)
        items.append((name, value))
    headers = Headers(items)
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        method = draw(TOKEN)
        user = draw(TOKEN)
        return Request(headers, body, method, f"sip:{user}@example.test")
    status = draw(st.integers(100, 699))
    reason = draw(VALUE)
    return Response(headers, body, status, reason)


@pytest.mark.slow
@given(messages())
def test_round_trip(message: Request | Response) -> None:
    data = message.to_bytes()
    assert parse_message(data) == message
    assert parse_message(data, stream=True) == message
    assert StreamFramer().feed(data) == [data]


@pytest.mark.slow
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_give_a_message_or_a_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_message(data)
    with contextlib.suppress(ParseError):
        StreamFramer().feed(data)


@pytest.mark.slow
@settings(max_examples=300)
@given(messages(), st.data())
def test_mutated_messages_never_crash_the_parser(
    message: Request | Response, data: st.DataObject
) -> None:
    raw = bytearray(message.to_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        raw[pos : pos + 1] = data.draw(st.binary(min_size=0, max_size=3))
    try:
        parsed = parse_message(bytes(raw))
    except ParseError:
        return
    # Whatever parsed must serialize and parse again to the same message.
    assert parse_message(parsed.to_bytes()) == parsed
    for text in [v for _, v in parsed.headers]:
        for parser in (parse_uri, parse_name_addr, parse_via, parse_cseq):
            with contextlib.suppress(ParseError):
                parser(text)


def test_a_400_for_unparseable_bytes_never_echoes_a_control_character() -> None:
    """Found by the mutation fuzzer: a CSeq with a control character was copied into the
    400, so the answer was itself a malformed message."""
    from expertline.sip.checks import unparseable_response

    head = (
        "INVITE sip:+18005550100@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKx\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: c1\r\n"
    )
    for cseq in ("1\x00 INVITE", "1 INV\x1bITE", "1\x7f INVITE"):
        data = (head + f"CSeq: {cseq}\r\nContent-Length: 0\r\n\r\n").encode()
        with pytest.raises(ParseError):
            parse_message(data)
        response = unparseable_response(data, "control character in header CSeq")
        assert response is None or parse_message(response.to_bytes()).status == 400
    clean = (head + "CSeq: 1 INVITE\r\nContent-Length: 0\r\nX: \x01\r\n\r\n").encode()
    answer = unparseable_response(clean, "control character in header X")
    assert answer is not None and parse_message(answer.to_bytes()).status == 400
