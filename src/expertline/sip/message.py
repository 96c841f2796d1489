"""SIP messages (RFC 3261 §7, §20): parsing and serialization, no I/O.

Why hand-written: no maintained Python SIP stack offers a sans-I/O parser together with
proxy-grade transactions (see docs/sip.md). This module is the smallest correct piece: it
turns bytes into ``Request``/``Response`` objects and back, expands compact header names,
splits multi-valued headers (respecting quotes and ``<...>``), and frames messages on streams
by Content-Length. The values inside headers (parameters, URIs, name-addr, Via, CSeq) are
``sip.grammar``'s, re-exported here.

Every failure to understand input is a ``ParseError`` (never another exception): the front
answers ``400`` when the message got far enough to be answered, and drops it otherwise.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from expertline.sip.grammar import (
    CSeq,
    NameAddr,
    ParseError,
    SipUri,
    Via,
    format_params,
    is_digits,
    is_token,
    parse_cseq,
    parse_host_port,
    parse_name_addr,
    parse_params,
    parse_uri,
    parse_via,
    split_list,
    unescape,
)

SIP_VERSION = "SIP/2.0"
BRANCH_COOKIE = "z9hG4bK"
MAX_MESSAGE_BYTES = 65_535
MAX_HEADERS = 128

COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_SPECIAL_CASE: dict[str, str] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "p-asserted-identity": "P-Asserted-Identity",
    "p-preferred-identity": "P-Preferred-Identity",
    "rack": "RAck",
    "rseq": "RSeq",
}

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1); others are single-valued
# (From, To, Call-ID, CSeq...) or carry commas inside their values (dates, auth headers).
MULTI_VALUED: frozenset[str] = frozenset(
    {
        "Via",
        "Route",
        "Record-Route",
        "Contact",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Content-Encoding",
        "Allow-Events",
        "P-Asserted-Identity",
        "Path",
        "Service-Route",
    }
)

# Headers a request carries at most once (RFC 3261 §7.3.1: only list-valued headers repeat).
# Two of them make the message ambiguous (which Call-ID is the dialog's, which length frames
# the body): such a message is malformed, answered 400 and never acted upon.
SINGLE_VALUED: frozenset[str] = frozenset(
    {"Call-ID", "CSeq", "Content-Length", "Content-Type", "From", "To", "Max-Forwards"}
)

REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    302: "Moved Temporarily",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}


_CANONICAL: dict[str, str] = {}
_CANONICAL_MAX = 4096  # names seen on the wire are few; a flood of new ones is not cached


def canonical_name(name: str) -> str:
    """``v`` -> ``Via``, ``call-id`` -> ``Call-ID``, ``x-foo-bar`` -> ``X-Foo-Bar``."""
    known = _CANONICAL.get(name)
    if known is not None:
        return known
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        result = COMPACT_FORMS[lower]
    else:
        result = _SPECIAL_CASE.get(lower) or "-".join(
            part[:1].upper() + part[1:] for part in lower.split("-")
        )
    if len(_CANONICAL) < _CANONICAL_MAX:
        _CANONICAL[name] = result
    return result


_BAD_REQUEST_URI = re.compile(r"[\x00-\x20]")


# --- headers and messages ---------------------------------------------------------------------


class Headers:
    """Ordered header lines ``(canonical name, value)``; lookups are case-insensitive."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        return new

    def get(self, name: str) -> str | None:
        """The first value of ``name`` (for list headers: the first element)."""
        name = canonical_name(name)
        for n, v in self._items:
            if n == name:
                return split_list(v)[0] if name in MULTI_VALUED and "," in v else v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order; list headers are split on top-level commas."""
        name = canonical_name(name)
        out: list[str] = []
        multi = name in MULTI_VALUED
        for n, v in self._items:
            if n == name:
                if multi:
                    out.extend(split_list(v))
                else:
                    out.append(v)
        return out

    def has(self, name: str) -> bool:
        name = canonical_name(name)
        return any(n == name for n, _ in self._items)

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def add_first(self, name: str, value: str) -> None:
        """Insert a value before every other line of the same name (Via, Record-Route)."""
        name = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == name:
                self._items.insert(i, (name, value))
                return
        self._items.append((name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` with one line (or append)."""
        name = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == name:
                self._items[i] = (name, value)
                self._items = [
                    item for j, item in enumerate(self._items) if j <= i or item[0] != name
                ]
                return
        self._items.append((name, value))

    def remove(self, name: str) -> None:
        name = canonical_name(name)
        self._items = [item for item in self._items if item[0] != name]

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first element of a list header where it stands (the top Via stamped
        with ``received``): header order is kept (RFC 3261 §7.3.1)."""
        name = canonical_name(name)
        for i, (n, v) in enumerate(self._items):
            if n == name:
                rest = split_list(v)[1:] if name in MULTI_VALUED and "," in v else []
                self._items[i] = (name, ", ".join([value, *rest]))
                return
        self._items.append((name, value))

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first element of a list header (the top Via, the top Route)."""
        name = canonical_name(name)
        for i, (n, v) in enumerate(self._items):
            if n == name:
                values = split_list(v)
                if len(values) <= 1:
                    del self._items[i]
                    return values[0] if values else None
                self._items[i] = (name, ", ".join(values[1:]))
                return values[0]
        return None


@dataclass(slots=True)
class Message:
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self.headers.get("CSeq") or "")

    @property
    def top_via(self) -> Via:
        value = self.headers.get("Via")
        if value is None:
            raise ParseError("no Via")
        return parse_via(value)

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self.headers.get("From") or "")

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self.headers.get("To") or "")

    def _header_bytes(self) -> bytes:
        lines = [f"{n}: {v}" for n, v in self.headers if n != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(slots=True)
class Request(Message):
    method: str = "OPTIONS"
    uri: str = ""
    version: str = SIP_VERSION

    def to_bytes(self) -> bytes:
        return (
            f"{self.method} {self.uri} {self.version}\r\n".encode()
            + self._header_bytes()
            + self.body
        )

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id}>"


@dataclass(slots=True)
class Response(Message):
    status: int = 200
    reason: str = "OK"
    version: str = SIP_VERSION

    def to_bytes(self) -> bytes:
        start = f"{self.version} {self.status} {self.reason}\r\n".encode()
        return start + self._header_bytes() + self.body

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self.call_id}>"


def parse_message(data: bytes, stream: bool = False) -> Request | Response:
    """Parse one message. ``stream``: the bytes were framed by Content-Length already.

    On datagrams, Content-Length (when present) cuts the body and must not exceed it.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise ParseError("message too large")
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        raise ParseError("no end of headers")
    try:
        head = data[:head_end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError("headers are not UTF-8") from exc
    start, *lines = head.split("\r\n")
    headers = _parse_header_lines(lines)
    body = _framed_body(headers, data[head_end + 4 :], stream)
    if start.startswith("SIP/"):
        return _response(start, headers, body)
    return _request(start, headers, body)


def _framed_body(headers: Headers, body: bytes, stream: bool) -> bytes:
    """The body as Content-Length frames it (the header itself is dropped: it is recomputed
    when the message is serialized)."""
    length_text = headers.get("Content-Length")
    if length_text is None:
        return b"" if stream else body
    length_text = length_text.strip()
    if not is_digits(length_text) or len(length_text) > 6:
        raise ParseError(f"bad Content-Length {length_text!r}")
    length = int(length_text)
    if length > len(body):
        raise ParseError("body shorter than Content-Length")
    headers.remove("Content-Length")
    return body[:length]


def _response(start: str, headers: Headers, body: bytes) -> Response:
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    if version != SIP_VERSION:
        raise ParseError(f"unsupported version {version!r}")
    if len(code) != 3 or not is_digits(code) or code[0] == "0":
        raise ParseError(f"bad status code {code!r}")
    if has_control(reason):
        raise ParseError("bad reason phrase")
    return Response(headers, body, int(code), reason)


def _request(start: str, headers: Headers, body: bytes) -> Request:
    parts = start.split(" ")
    if len(parts) != 3:
        raise ParseError(f"bad request line {start[:80]!r}")
    method, uri, version = parts
    if not is_token(method):
        raise ParseError(f"bad method {method[:40]!r}")
    if not version.startswith("SIP/"):
        raise ParseError(f"bad version {version[:40]!r}")
    if not uri or _BAD_REQUEST_URI.search(uri):
        raise ParseError("bad Request-URI")
    return Request(headers, body, method, uri, version)


def _parse_header_lines(lines: list[str]) -> Headers:
    items: list[tuple[str, str]] = []
    for line in lines:
        if not line:
            raise ParseError("empty header line")
        if line[0] in " \t":
            if not items:
                raise ParseError("continuation line before any header")
            name, value = items[-1]
            folded = line.strip()
            if has_control(folded):
                raise ParseError(f"control character in header {name}")
            items[-1] = (name, f"{value} {folded}".strip())
            continue
        match = _HEADER_LINE.match(line)
        if match is None:
            raise ParseError(f"bad header line {line[:60]!r}")
        name, value = match.group(1), match.group(2)
        if has_control(value):
            raise ParseError(f"control character in header {name}")
        items.append((name, value.strip(" \t")))
        if len(items) > MAX_HEADERS:
            raise ParseError("too many headers")
    headers = Headers()
    headers._items = [(canonical_name(n), v) for n, v in items]
    seen: set[str] = set()
    for name, _ in headers:
        if name in SINGLE_VALUED:
            if name in seen:
                raise ParseError(f"duplicate {name} header")
            seen.add(name)
    return headers


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_LINE = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:(.*)", re.DOTALL)


def has_control(text: str) -> bool:
    """Whether ``text`` has a control character a header value may not hold (tab may)."""
    return _CONTROL.search(text) is not None


class StreamFramer:
    """Cut a byte stream (TCP) into messages by Content-Length (RFC 3261 §18.3).

    Leading CRLFs (keep-alives, RFC 5626 §4.4.1) are skipped. A bad frame raises ParseError:
    the stream cannot be resynchronised and the connection should be closed.
    """

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_message

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while True:
            while self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self._max:
                    raise ParseError("headers too long on stream")
                return frames
            length = _content_length(bytes(self._buffer[:end]))
            total = end + 4 + length
            if total > self._max:
                raise ParseError("message too large on stream")
            if len(self._buffer) < total:
                return frames
            frames.append(bytes(self._buffer[:total]))
            del self._buffer[:total]


def _content_length(head: bytes) -> int:
    """The body length that frames this message. Two Content-Length headers that disagree
    leave the stream without a trustworthy boundary (request smuggling): a framing error.
    Two that agree frame the message, which the parser then refuses (duplicate header)."""
    length: int | None = None
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            if not text.isdigit() or len(text) > 6:
                raise ParseError(f"bad Content-Length {text[:20]!r}")
            if length is not None and length != int(text):
                raise ParseError("Content-Length headers disagree")
            length = int(text)
    return length or 0


# --- building messages -----------------------------------------------------------------------


def new_branch() -> str:
    return BRANCH_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6: Via, From, To (+tag), Call-ID, CSeq copied."""
    headers = Headers()
    items: list[tuple[str, str]] = []
    for name, value in request.headers:
        if name in ("Via", "From", "Call-ID", "CSeq") or (name == "To" and to_tag is None):
            items.append((name, value))
        elif name == "To":
            tagged = ";tag=" in value.replace(" ", "").lower()
            items.append((name, value if tagged else f"{value};tag={to_tag}"))
    headers._items = items
    for name, value in extra:
        headers.add(name, value)
    return Response(headers, body, status, reason or REASONS.get(status, "Unknown"))


__all__ = [
    "BRANCH_COOKIE",
    "COMPACT_FORMS",
    "MAX_HEADERS",
    "MAX_MESSAGE_BYTES",
    "MULTI_VALUED",
    "REASONS",
    "SINGLE_VALUED",
    "SIP_VERSION",
    "CSeq",
    "Headers",
    "Message",
    "NameAddr",
    "ParseError",
    "Request",
    "Response",
    "SipUri",
    "StreamFramer",
    "Via",
    "canonical_name",
    "format_params",
    "is_digits",
    "is_token",
    "make_response",
    "new_branch",
    "new_tag",
    "parse_cseq",
    "parse_host_port",
    "parse_message",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "parse_via",
    "split_list",
    "unescape",
]
