"""What the front checks of a request before it acts on it (RFC 3261 §8.2, §16.3), no I/O.

Everything here is a pure function of the message: the first problem that makes a request
unanswerable but with ``400``, its Max-Forwards, where it really came from (the top Via is
stamped with ``received``/``rport``), and the ``400`` (or nothing) for bytes that did not even
parse. The front decides what to do with the answers.
"""

from __future__ import annotations

from expertline.sip.message import (
    SINGLE_VALUED,
    CSeq,
    Headers,
    NameAddr,
    ParseError,
    Request,
    Response,
    Via,
    canonical_name,
    has_control,
    is_digits,
    make_response,
    new_tag,
    parse_name_addr,
    parse_params,
    parse_via,
)
from expertline.sip.transport import Peer

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
# Methods defined by RFCs that we understand but do not serve (405); anything else is 501.
KNOWN_METHODS = frozenset(
    {"REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "INFO", "PRACK", "UPDATE", "REFER", "PUBLISH"}
)
SUPPORTED_OPTIONS: frozenset[str] = frozenset()
REASON_MAX = 200  # characters of a reason phrase that says what was wrong with a request
DEFAULT_MAX_FORWARDS = 70


# RFC 3326 Reason causes that say an upstream timer gave up: SIP 408 Request Timeout, and
# ITU-T Q.850 102 "recovery on timer expiry".
_TIMEOUT_CAUSES = {"sip": "408", "q.850": "102"}


def upstream_timeout(request: Request) -> str | None:
    """The ``Reason`` of a CANCEL when it says an upstream timer gave up (RFC 3326:
    ``SIP;cause=408`` or ``Q.850;cause=102``), else None (a caller's CANCEL, or a Reason that
    does not parse: taken as the caller's)."""
    for value in request.headers.get_all("Reason"):
        protocol, _, params = value.partition(";")
        try:
            cause = parse_params(params).get("cause")
        except ParseError:
            continue
        if cause is not None and _TIMEOUT_CAUSES.get(protocol.strip().lower()) == cause:
            return value.strip()[:REASON_MAX]
    return None


def via_count(request: Request) -> int:
    """How many Via entries a request carries (one per hop it came through; RFC 3261 §20.42
    lets several share a header line, comma-separated)."""
    return sum(value.count(",") + 1 for value in request.headers.get_all("Via"))


def bad_request(problem: str) -> str:
    """The reason phrase of a 400 that says what was wrong, bounded."""
    return f"Bad Request ({problem})"[:REASON_MAX]


def validate(request: Request, cseq: CSeq) -> tuple[str | None, NameAddr | None]:
    """The first reason this request cannot be processed (or None), and its parsed To
    (RFC 3261 §8.2; the top Via and the CSeq were parsed by the caller)."""
    h = request.headers
    for name in ("From", "To", "Call-ID"):
        if not h.has(name):
            return f"missing {name}", None
    try:
        vias = h.get_all("Via")
        for value in vias[1:]:
            parse_via(value)
        parse_name_addr(h.get("From") or "")
        to = parse_name_addr(h.get("To") or "")
    except ParseError as exc:
        return str(exc), None
    if cseq.method != request.method:
        return "CSeq method does not match the request", None
    if not (h.get("Call-ID") or "").strip():
        return "empty Call-ID", None
    if max_forwards(request) is None:
        return "bad Max-Forwards", None
    return None, to


def max_forwards(request: Request) -> int | None:
    """The request's Max-Forwards (70 when absent); None when it is not a number 0-255."""
    value = request.headers.get("Max-Forwards")
    if value is None:
        return DEFAULT_MAX_FORWARDS
    value = value.strip()
    if not is_digits(value) or len(value) > 3 or int(value) > 255:
        return None
    return int(value)


def decremented_max_forwards(request: Request) -> str:
    """The Max-Forwards a forwarded copy of ``request`` carries."""
    return str(max(0, (max_forwards(request) or DEFAULT_MAX_FORWARDS) - 1))


def stamp_via(request: Request, peer: Peer, via: Via) -> None:
    """RFC 3261 §18.2.1 / RFC 3581: note where the request really came from in the top Via."""
    changed = False
    if via.host != peer.host:
        via.params["received"] = peer.host
        changed = True
    if "rport" in via.params and via.params["rport"] is None:
        via.params["rport"] = str(peer.port)
        changed = True
    if changed:
        request.headers.replace_first("Via", str(via))  # in place: header order is kept


_ECHOED = frozenset({"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"})


def unparseable_response(data: bytes, why: str) -> Response | None:
    """The 400 for bytes that did not parse, when their request line and Via can be read
    (so the answer can find its way back); None: drop them (a response, an ACK, noise)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    lines = head.decode("utf-8", "replace").split("\r\n")
    if not lines or lines[0].startswith("SIP/") or " ACK " in f" {lines[0]} ":
        return None
    h = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or name.lower() not in _ECHOED:
            continue
        if has_control(value):
            return None  # echoed, it would make the answer itself malformed: drop
        # A duplicated Call-ID/From/To/CSeq may be why it is refused: echo the first.
        if canonical_name(name) not in SINGLE_VALUED or not h.has(name):
            h.add(name, value.strip())
    try:
        via = h.get("Via")
        if via is None:
            raise ParseError("no Via")
        parse_via(via)
        request = Request(h, b"", "INVITE", "sip:invalid")
        return make_response(request, 400, bad_request(why), to_tag=new_tag())
    except (ParseError, ValueError):
        return None


def normal_host(host: str) -> str:
    return "127.0.0.1" if host in ("localhost", "0.0.0.0") else host


def contact_uri(label: str) -> str:
    """A label as a Contact URI: URIs as they are, bare numbers as ``tel:``."""
    if ":" in label and label.split(":", 1)[0].isalpha():
        return label
    return f"tel:{label}"
