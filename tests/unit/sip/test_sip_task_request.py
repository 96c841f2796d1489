"""From an INVITE to a routing request: caller, dialed number, X- headers as attributes."""

from __future__ import annotations

import pytest

from expertline.errors import InvalidInput
from expertline.sip.front import build_task_request, contact_uri, header_attribute
from expertline.sip.message import Headers, Request


def invite(*headers: tuple[str, str]) -> Request:
    base = [("From", "<sip:+15551234567@h>;tag=1"), ("To", "<sip:+18005550100@h>")]
    return Request(Headers([*base, *headers]), b"", "INVITE", "sip:+18005550100@h")


def test_caller_prefers_p_asserted_identity() -> None:
    assert build_task_request(invite(), "+1800").caller == "+15551234567"
    pai = ("P-Asserted-Identity", '"Real" <sip:+15557654321@carrier.test>, <tel:+15557654321>')
    assert build_task_request(invite(pai), "+1800").caller == "+15557654321"
    broken = ("P-Asserted-Identity", "<sip:nothing")
    assert build_task_request(invite(broken), "+1800").caller == "+15551234567"


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
    assert request.attributes == {"tier": "gold", "account_id": "42"}
    assert request.priority == -3 and request.external_id == "icm-1"
    assert request.origin == "sip" and request.entry_point == "+18005550100"


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Expertline-Priority", "high")],
        [("X-Big", "x" * 257)],
        [(f"X-A{i}", "v") for i in range(33)],
    ],
)
def test_bad_headers_are_invalid_input(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidInput):
        build_task_request(invite(*headers), "+1800")


def test_header_attribute_names_and_contact_uris() -> None:
    assert header_attribute("X-Expertline-Account-Id") == "account_id"
    assert header_attribute("X-Customer-Tier") == "customer_tier"
    assert header_attribute("X-") is None and header_attribute("Subject") is None
    assert contact_uri("sip:1001@pbx.test") == "sip:1001@pbx.test"
    assert contact_uri("+15551234567") == "tel:+15551234567"
