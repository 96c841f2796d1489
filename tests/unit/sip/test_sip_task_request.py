"""From an INVITE to a routing request: caller, dialed number, X- headers as attributes,
every value within the limits of the records it ends up in."""

from __future__ import annotations

import pytest

from expertline.errors import Forbidden, InvalidInput
from expertline.sip.front import contact_uri
from expertline.sip.message import Headers, ParseError, Request, parse_uri
from expertline.sip.task_request import build_task_request, header_attribute, uri_number
from expertline.sip.trust import AttachPolicy, attach_proof, parse_networks

KEY = b"0123456789abcdef0123456789abcdef"


def invite(*headers: tuple[str, str]) -> Request:
    base = [("From", "<sip:+15551234567@h>;tag=1"), ("To", "<sip:+18005550100@h>")]
    return Request(Headers([*base, *headers]), b"", "INVITE", "sip:+18005550100@h")


def task(*headers: tuple[str, str], number: str = "+1800") -> object:
    return build_task_request(invite(*headers), number).task


def test_caller_prefers_p_asserted_identity() -> None:
    assert build_task_request(invite(), "+1800").task.caller == "+15551234567"
    pai = ("P-Asserted-Identity", '"Real" <sip:+15557654321@carrier.test>, <tel:+15557654321>')
    assert build_task_request(invite(pai), "+1800").task.caller == "+15557654321"
    broken = ("P-Asserted-Identity", "<sip:nothing")
    assert build_task_request(invite(broken), "+1800").task.caller == "+15551234567"
    escaped = ("P-Asserted-Identity", "<sip:%2B1555%30@carrier.test>")
    assert build_task_request(invite(escaped), "+1800").task.caller == "+15550"


def test_x_headers_become_attributes_and_expertline_ones_win() -> None:
    request = build_task_request(
        invite(
            ("X-Tier", "silver"),
            ("X-Expertline-Tier", "gold"),
            ("X-Expertline-Account-Id", " 42 "),
            ("Subject", "not an attribute"),
            ("X-Expertline-Priority", "-3"),
            ("X-Expertline-External-Id", "icm-1"),
        ),
        "+18005550100",
    )
    assert request.task.attributes == {"tier": "gold", "account_id": "42"}
    assert request.task.priority == -3
    assert request.task.external_id == "sip:icm-1" and not request.attach  # namespaced
    assert request.task.origin == "sip" and request.task.entry_point == "+18005550100"


@pytest.mark.parametrize(
    "headers, problem",
    [
        ([("X-Expertline-Priority", "high")], "Priority must be an integer"),
        ([("X-Expertline-Priority", "1001")], "from -1000 to 1000"),
        ([("X-Big", "x" * 257)], "attributes.big: is 257 characters; at most 256"),
        ([("X-Big", "a\x00b")], "attributes.big: contains a control character"),
        ([(f"X-A{i}", "v") for i in range(101)], "at most 100 attributes"),
        ([("From", f"<sip:{'1' * 256}@h>;tag=1")], "caller in From is 256 characters"),
        ([("From", "<sip:%0a@h>;tag=1")], "caller in From: an escaped control character"),
        ([("From", "<sip:%4@h>;tag=1")], "caller in From: bad %-escape"),
        ([("P-Asserted-Identity", f"<tel:{'1' * 256}>")], "caller in P-Asserted-Identity"),
        ([("X-Expertline-External-Id", "e" * 252)], "External-Id is 252 characters; at most 251"),
        ([("X-Expertline-External-Id", "")], "External-Id must not be empty"),
        (
            [("X-Expertline-External-Id", "a"), ("X-Expertline-External-Id", "b")],
            "more than one X-Expertline-External-Id",
        ),
        ([("X-Expertline-Priority", "1"), ("x-expertline-priority", "2")], "more than one"),
        ([("X-Expertline-Attach-Proof", "00")], "Attach-Proof needs X-Expertline-External-Id"),
    ],
)
def test_values_out_of_bounds_are_invalid_input(
    headers: list[tuple[str, str]], problem: str
) -> None:
    base = dict(invite().headers)
    names = {name for name, _ in headers}
    kept = [(n, v) for n, v in base.items() if n not in names]
    request = Request(Headers([*kept, *headers]), b"", "INVITE", "sip:+18005550100@h")
    with pytest.raises(InvalidInput) as caught:
        build_task_request(request, "+1800")
    assert problem in caught.value.message


def test_values_at_their_bounds_are_taken_whole() -> None:
    request = build_task_request(
        invite(
            ("P-Asserted-Identity", f"<sip:{'1' * 255}@h>"),
            ("X-Expertline-External-Id", "e" * 251),
            ("X-Big", "x" * 256),
            *[(f"X-A{i}", "v") for i in range(99)],
        ),
        "9" * 128,
    ).task
    assert request.caller == "1" * 255 and request.external_id == "sip:" + "e" * 251
    assert len(request.attributes) == 100 and request.attributes["big"] == "x" * 256
    with pytest.raises(InvalidInput, match="dialed number is 129 characters"):
        build_task_request(invite(), "9" * 129)


def test_attaching_needs_the_policy_a_trusted_source_and_the_proof() -> None:
    policy = AttachPolicy(KEY, parse_networks(["10.0.0.0/8"]))
    proof = attach_proof(KEY, "icm-1")
    headers = (("X-Expertline-External-Id", "icm-1"), ("X-Expertline-Attach-Proof", proof))
    attached = build_task_request(invite(*headers), "+1800", policy, "10.1.2.3")
    assert attached.attach and attached.task.external_id == "icm-1"  # the routing client's id
    assert attached.task.attributes == {}  # the proof is no attribute (never stored)
    for attach, source, why in [
        (None, "10.1.2.3", "not enabled"),
        (AttachPolicy(KEY, ()), "10.1.2.3", "not enabled"),
        (policy, "192.0.2.1", "only from trusted peers"),
        (AttachPolicy(b"another key of 16+ bytes", policy.trusted), "10.1.2.3", "does not match"),
    ]:
        with pytest.raises(Forbidden, match=why):
            build_task_request(invite(*headers), "+1800", attach, source)


@pytest.mark.parametrize(
    "uri, number",
    [
        ("sip:%2B1800555%30100@h", "+18005550100"),
        ("sip:%2b1800555%30100;phone-context=x@h", "+18005550100"),
        ("sip:+18005550100@h;user=phone", "+18005550100"),
        ("tel:%2B18005550100;phone-context=x", "+18005550100"),
        ("sip:h", None),
    ],
)
def test_uri_numbers_are_unescaped(uri: str, number: str | None) -> None:
    assert uri_number(parse_uri(uri)) == number


def test_a_malformed_escape_is_a_parse_error() -> None:
    for uri in ("sip:%2@h", "sip:%zz1@h", "sip:%ff@h"):
        with pytest.raises(ParseError):
            uri_number(parse_uri(uri))


def test_header_attribute_names_and_contact_uris() -> None:
    assert header_attribute("X-Expertline-Account-Id") == "account_id"
    assert header_attribute("X-Customer-Tier") == "customer_tier"
    assert header_attribute("X-") is None and header_attribute("Subject") is None
    assert contact_uri("sip:1001@pbx.test") == "sip:1001@pbx.test"
    assert contact_uri("+15551234567") == "tel:+15551234567"
