"""The grammar of SIP header values (RFC 3261 §19, §20, §25), no I/O: tokens, %-escapes,
comma lists, parameters, URIs, name-addr/addr-spec, Via and CSeq.

Every failure to understand a value is a ``ParseError``, never another exception. Messages
(start line, headers, body, framing) are ``sip.message``, which re-exports these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes


class ParseError(ValueError):
    """The input is not a SIP message (or not a well-formed part of one)."""


_BAD_HOST = re.compile(r'[ \t<>"@;?,]')
_BAD_URI = re.compile(r'[ \t\r\n<>"]')
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


_DIGITS = re.compile(r"[0-9]+")


def is_digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts characters such as '²')."""
    return _DIGITS.fullmatch(text) is not None


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPED_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def unescape(text: str) -> str:
    """``%2B1800`` -> ``+1800``: escaped characters decoded (RFC 3261 §19.1.4 compares URI
    parts unescaped). A ``%`` without two hex digits, bytes that are not UTF-8, or an escaped
    control character (``%00``, ``%0A``...: never part of a number or a name) are a ParseError.
    The result's length is unbounded: callers bound it like other input."""
    if "%" not in text:
        return text
    if _BAD_ESCAPE.search(text):
        raise ParseError("bad %-escape")
    try:
        decoded = unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError("%-escapes that are not UTF-8") from exc
    if _ESCAPED_CONTROL.search(decoded):
        raise ParseError("an escaped control character")
    return decoded


def is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def split_list(value: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside double quotes and angle brackets; strip blanks; drop empties."""
    if sep not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            part = value[start:i].strip()
            if part:
                parts.append(part)
            start = i + 1
    part = value[start:].strip()
    if part:
        parts.append(part)
    return parts


def parse_params(text: str) -> dict[str, str | None]:
    """``;a=1;b;c="x y"`` (leading ``;`` optional) -> ``{"a": "1", "b": None, "c": '"x y"'}``.

    Names are lowercased (parameter names are case-insensitive); values are kept as written.
    """
    params: dict[str, str | None] = {}
    for item in split_list(text, ";"):
        name, eq, val = item.partition("=")
        name = name.strip().lower()
        if not is_token(name):
            raise ParseError(f"bad parameter name {name!r}")
        params[name] = val.strip() if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


# --- URIs -------------------------------------------------------------------------------


@dataclass(slots=True)
class SipUri:
    """A ``sip:``/``sips:`` URI (RFC 3261 §19.1); ``tel:`` and others keep their text opaque."""

    scheme: str
    user: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None
    password: str | None = None
    opaque: str | None = None  # the part after ``scheme:`` for non-SIP schemes

    @property
    def is_sip(self) -> bool:
        return self.opaque is None

    @property
    def transport(self) -> str:
        value = self.params.get("transport")
        return (value or ("tls" if self.scheme == "sips" else "udp")).lower()

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        headers = f"?{self.headers}" if self.headers is not None else ""
        return f"{self.scheme}:{userinfo}{host}{port}{format_params(self.params)}{headers}"


def parse_host_port(text: str) -> tuple[str, int | None]:
    """``host``, ``host:5060``, ``[::1]:5060`` -> (host, port or None)."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"bad IPv6 reference {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ParseError(f"bad host:port {text!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, sep, port_text = text.partition(":")
        if sep and not port_text:
            raise ParseError(f"bad host:port {text!r}")
    if not host or _BAD_HOST.search(host):
        raise ParseError(f"bad host {host!r}")
    if not port_text:
        return host, None
    if not is_digits(port_text) or len(port_text) > 5 or int(port_text) > 65535:
        raise ParseError(f"bad port {port_text!r}")
    return host, int(port_text)


def parse_uri(text: str) -> SipUri:
    """Parse a URI. ``sip``/``sips`` are fully parsed; other schemes are kept opaque."""
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or not scheme or not scheme[0].isalpha() or not rest:
        raise ParseError(f"bad URI {text!r}")
    if not all(ch.isalnum() or ch in "+-." for ch in scheme):
        raise ParseError(f"bad URI scheme {scheme!r}")
    if _BAD_URI.search(rest):
        raise ParseError(f"bad URI {text!r}")
    if scheme not in ("sip", "sips"):
        return SipUri(scheme=scheme, opaque=rest)
    headers: str | None = None
    if "?" in rest:
        rest, _, headers = rest.partition("?")
    user: str | None = None
    password: str | None = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, pcolon, pw = userinfo.partition(":")
        if pcolon:
            password = pw
        if not user:
            raise ParseError(f"empty user in {text!r}")
    hostport, semi, param_text = rest.partition(";")
    host, port = parse_host_port(hostport)
    params = parse_params(param_text) if semi else {}
    return SipUri(scheme, user, host.lower(), port, params, headers, password)


# --- name-addr / addr-spec ------------------------------------------------------------------


@dataclass(slots=True)
class NameAddr:
    """``"Display" <uri>;tag=x`` or ``uri;tag=x`` (From, To, Contact, Route, P-Asserted-Identity)."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(value: str) -> NameAddr:
    value = value.strip()
    if not value:
        raise ParseError("empty address")
    lt = _find_unquoted_lt(value)
    if lt >= 0:
        gt = value.find(">", lt)
        if gt < 0:
            raise ParseError(f"unterminated <...> in {value!r}")
        display = value[:lt].strip() or None
        if display and display.count('"') % 2:
            raise ParseError(f"bad display name in {value!r}")
        uri = parse_uri(value[lt + 1 : gt])
        rest = value[gt + 1 :].strip()
        if rest and not rest.startswith(";"):
            raise ParseError(f"unexpected text after address in {value!r}")
        return NameAddr(uri, display, parse_params(rest) if rest else {})
    # addr-spec: parameters after the URI belong to the header (RFC 3261 §20.10).
    uri_text, semi, param_text = value.partition(";")
    if "?" in uri_text or "," in uri_text:
        raise ParseError(f"addr-spec with reserved characters needs <...>: {value!r}")
    return NameAddr(parse_uri(uri_text), None, parse_params(param_text) if semi else {})


# A quoted string (RFC 3261 §25.1: backslash escapes the next character; an unterminated one
# runs to the end), or the ``<`` that opens a name-addr's URI.
_QUOTED_OR_LT = re.compile(r'"(?:[^"\\]|\\.?)*(?:"|$)|<', re.DOTALL)


def _find_unquoted_lt(text: str) -> int:
    """The index of the first ``<`` outside double quotes, or -1."""
    for match in _QUOTED_OR_LT.finditer(text):
        if match.group() == "<":
            return match.start()
    return -1


# --- Via, CSeq --------------------------------------------------------------------------------


@dataclass(slots=True)
class Via:
    transport: str  # UDP | TCP | TLS ...
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {host}{port}{format_params(self.params)}"


def parse_via(value: str) -> Via:
    proto, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    parts = proto.split("/")
    if len(parts) != 3 or parts[0].upper() != "SIP" or parts[1] != "2.0" or not is_token(parts[2]):
        raise ParseError(f"bad Via protocol {proto!r}")
    if not rest:
        raise ParseError("Via without sent-by")
    sent_by, semi, param_text = rest.partition(";")
    host, port = parse_host_port(sent_by)
    return Via(parts[2].upper(), host, port, parse_params(param_text) if semi else {})


@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(value: str) -> CSeq:
    number, _, method = value.strip().partition(" ")
    method = method.strip()
    if not is_digits(number) or len(number) > 10 or int(number) >= 2**31 or not is_token(method):
        raise ParseError(f"bad CSeq {value!r}")
    return CSeq(int(number), method)
