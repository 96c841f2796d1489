"""From an INVITE to a routing request, every value checked where it arrives.

What an INVITE says ends up in stored rows: the dialed number and the caller in the task and
its TCD, ``X-Expertline-External-Id`` as the router call key, ``X-`` headers as attributes. Each
is checked here against the one table of bounds (``expertline.limits``), so a bad value is
refused with a 4xx before anything exists, and never later by the database when the task ends.

The external id from SIP is namespaced (``sip:`` + the header's value): a caller cannot name an
HTTP routing client's task and so join it. Joining a task that already exists ("attaching") is
for a trusted peer that proves it with ``X-Expertline-Attach-Proof`` (``sip/trust.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from expertline.errors import Forbidden, InvalidInput
from expertline.limits import (
    CALLER,
    DIALED_NUMBER,
    EXTERNAL_ID,
    PRIORITY,
    TextLimit,
    attribute_problems,
    text_problem,
)
from expertline.runtime.ports import TaskRequest
from expertline.sip.message import (
    ParseError,
    Request,
    SipUri,
    is_digits,
    parse_name_addr,
    unescape,
)
from expertline.sip.trust import AttachPolicy

EXTERNAL_ID_PREFIX = "sip:"
# The header's value is stored after the prefix, in the same column as HTTP's external ids.
SIP_EXTERNAL_ID = TextLimit(EXTERNAL_ID.max_chars - len(EXTERNAL_ID_PREFIX))

PRIORITY_HEADER = "x-expertline-priority"
EXTERNAL_ID_HEADER = "x-expertline-external-id"
ATTACH_PROOF_HEADER = "x-expertline-attach-proof"
RESERVED_HEADERS = frozenset({PRIORITY_HEADER, EXTERNAL_ID_HEADER, ATTACH_PROOF_HEADER})


@dataclass(frozen=True)
class RoutingRequest:
    """The task request of one INVITE, and whether it may join an existing task."""

    task: TaskRequest
    attach: bool = False  # True only for a trusted peer that proved the external id


def uri_number(uri: SipUri) -> str | None:
    """The user part of a ``sip:`` URI (or a ``tel:`` number) without its parameters, its
    escapes decoded (RFC 3261 §19.1.4: ``%2B1800555%30100`` is ``+18005550100``).
    A malformed escape is a ParseError."""
    if uri.scheme == "tel" and uri.opaque:
        text = uri.opaque.split(";", 1)[0]
    elif uri.user:
        text = uri.user.split(";", 1)[0]
    else:
        return None
    return unescape(text) or None


def header_attribute(name: str) -> str | None:
    """``X-Expertline-Account-Id`` -> ``account_id``; ``X-Customer-Tier`` -> ``customer_tier``.

    Only ``X-`` headers become task attributes; ``X-Expertline-`` is the preferred prefix.
    """
    if name[:2] not in ("X-", "x-"):
        return None
    lower = name.lower()
    rest = lower[len("x-expertline-") :] if lower.startswith("x-expertline-") else lower[2:]
    rest = rest.replace("-", "_")
    return rest or None


def build_task_request(
    invite: Request,
    number: str,
    attach: AttachPolicy | None = None,
    source: str = "",
) -> RoutingRequest:
    """The routing request for an INVITE from ``source`` (the sender's address): caller from
    P-Asserted-Identity (else From), dialed number, ``X-`` headers as attributes,
    ``X-Expertline-Priority``/``-External-Id`` as such.

    Raises ``InvalidInput`` (answered 400) for a value out of bounds or ambiguous, and
    ``Forbidden`` (403) for an attach proof that is not accepted.
    """
    _check("dialed number", number, DIALED_NUMBER)
    caller = _caller(invite)
    reserved: dict[str, str] = {}
    attributes: dict[str, Any] = {}
    for name, value in invite.headers:
        lower = name.lower()
        if lower in RESERVED_HEADERS:
            if lower in reserved:
                raise InvalidInput(f"more than one {name} header")
            reserved[lower] = value.strip()
            continue
        attr = header_attribute(name)
        if attr is None:
            continue
        # X-Expertline-* wins over a plain X-* header of the same attribute name.
        if attr in attributes and not lower.startswith("x-expertline-"):
            continue
        attributes[attr] = value.strip()
    problems = attribute_problems(attributes)
    if problems:
        raise InvalidInput(f"X- header {problems[0]}", problems)
    external_id, attaching = _external_id(reserved, attach or AttachPolicy(), source)
    return RoutingRequest(
        TaskRequest(
            entry_point=number,
            caller=caller,
            channel="voice",
            attributes=attributes,
            priority=_priority(reserved.get(PRIORITY_HEADER)),
            external_id=external_id,
            origin="sip",
        ),
        attach=attaching,
    )


def _check(what: str, value: str, limit: TextLimit) -> None:
    why = text_problem(value, limit)
    if why is not None:
        raise InvalidInput(f"{what} {why}")


def _caller(invite: Request) -> str:
    """The caller's number (or URI), from P-Asserted-Identity when it can be read, else From."""
    pai = invite.headers.get("P-Asserted-Identity")
    source, value = "From", invite.headers.get("From") or ""
    if pai:
        try:
            _user_of(pai)
            source, value = "P-Asserted-Identity", pai
        except ParseError:
            pass
    try:
        caller = _user_of(value)
    except ParseError as exc:
        raise InvalidInput(f"caller in {source}: {exc}") from exc
    _check(f"caller in {source}", caller, CALLER)
    return caller


def _user_of(value: str) -> str:
    addr = parse_name_addr(value)
    return uri_number(addr.uri) or str(addr.uri)


def _priority(text: str | None) -> int | None:
    if text is None:
        return None
    low, high = PRIORITY
    if not is_digits(text.removeprefix("-")) or len(text) > 6 or not low <= int(text) <= high:
        raise InvalidInput(f"X-Expertline-Priority must be an integer from {low} to {high}")
    return int(text)


def _external_id(
    reserved: dict[str, str], attach: AttachPolicy, source: str
) -> tuple[str | None, bool]:
    """The task's external id, and whether the call may join the task that already has it."""
    value = reserved.get(EXTERNAL_ID_HEADER)
    proof = reserved.get(ATTACH_PROOF_HEADER)
    if value is None:
        if proof is not None:
            raise InvalidInput("X-Expertline-Attach-Proof needs X-Expertline-External-Id")
        return None, False
    if proof is None:
        _check("X-Expertline-External-Id", value, SIP_EXTERNAL_ID)
        return EXTERNAL_ID_PREFIX + value, False
    _check("X-Expertline-External-Id", value, EXTERNAL_ID)
    refusal = attach.refusal(value, proof, source)
    if refusal is not None:
        raise Forbidden(refusal)
    return value, True


__all__ = [
    "EXTERNAL_ID_PREFIX",
    "RoutingRequest",
    "build_task_request",
    "header_attribute",
    "uri_number",
]
