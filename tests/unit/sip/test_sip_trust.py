"""Who the SIP front trusts: the attach policy, and the hosts it may call in proxy mode."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from expertline.routing.model import ExpertSpec, RoutingConfig
from expertline.sip.message import parse_uri
from expertline.sip.trust import (
    AttachPolicy,
    OutboundTargets,
    attach_policy,
    attach_proof,
    parse_networks,
)

KEY = "k" * 32


def test_the_proof_is_the_hex_hmac_sha256_of_the_external_id() -> None:
    expected = hmac.new(KEY.encode(), b"icm-1", hashlib.sha256).hexdigest()
    assert attach_proof(KEY.encode(), "icm-1") == expected
    policy = AttachPolicy(KEY.encode(), parse_networks(["10.0.0.0/8", "::1"]))
    assert policy.refusal("icm-1", expected.upper(), "10.9.9.9") is None
    assert policy.refusal("icm-1", expected, "::1") is None
    assert policy.refusal("icm-1", expected, "::ffff:10.0.0.7") is None  # v4-mapped
    assert policy.refusal("icm-2", expected, "10.9.9.9") is not None  # bound to the id
    assert policy.refusal("icm-1", expected, "11.0.0.1") is not None


def test_attach_policy_from_settings() -> None:
    assert not attach_policy(None, ["10.0.0.0/8"], {}).enabled  # no key: off
    policy = attach_policy("ATTACH_KEY", ["10.0.0.0/8"], {"ATTACH_KEY": KEY})
    assert policy.enabled and policy.key == KEY.encode()
    with pytest.raises(ValueError, match="at least 16 bytes"):
        attach_policy("ATTACH_KEY", ["10.0.0.0/8"], {})
    with pytest.raises(ValueError, match="needs sip_trusted"):
        attach_policy("ATTACH_KEY", [], {"ATTACH_KEY": KEY})
    with pytest.raises(ValueError, match="not an IP address or network"):
        attach_policy(None, ["ten.0.0.0/8"], {})


def config(*phones: str, version: int = 1) -> RoutingConfig:
    experts = {
        f"e{i}": ExpertSpec(id=f"e{i}", name=f"E{i}", phone=phone) for i, phone in enumerate(phones)
    }
    return RoutingConfig(version=version, experts=experts, queues={}, matches={}, entry_points={})


def test_targets_default_to_the_experts_phone_hosts_and_follow_the_config() -> None:
    current = config("sip:1001@PBX.example.test:5060", "sip:1002@10.0.0.5", "+15551234567")
    targets = OutboundTargets(config=lambda: current)
    allowed = [
        "sip:9@pbx.example.test",
        "sip:9@pbx.example.test:5999;transport=tcp",  # hosts, not ports
        "sip:9@10.0.0.5",
    ]
    for uri in allowed:
        assert targets.allows_name(parse_uri(uri)), uri
    refused = [
        "sip:9@evil.test",
        "sip:9@pbx.example.test.evil.test",
        "sip:9@pbx.example.test;maddr=evil.test",  # maddr is where it would really go
        "sip:9@10.0.0.6",
    ]
    for uri in refused:
        assert not targets.allows_name(parse_uri(uri)), uri
    assert targets.allows_address("10.0.0.5") and not targets.allows_address("10.0.0.6")
    current = config("sip:1001@new.example.test", version=2)
    assert targets.allows_name(parse_uri("sip:9@new.example.test"))
    assert not targets.allows_name(parse_uri("sip:9@pbx.example.test"))


def test_extra_targets_names_wildcards_and_networks() -> None:
    targets = OutboundTargets(["*.phones.test", "gw.test", "192.0.2.0/24", "[2001:db8::1]"])
    assert targets.allows_name(parse_uri("sip:1@a.phones.test"))
    assert targets.allows_name(parse_uri("sip:1@a.b.phones.test"))
    assert not targets.allows_name(parse_uri("sip:1@phones.test"))
    assert not targets.allows_name(parse_uri("sip:1@xphones.test"))
    assert targets.allows_name(parse_uri("sip:1@GW.test"))
    assert targets.allows_name(parse_uri("sip:1@192.0.2.77"))
    assert targets.allows_name(parse_uri("sip:1@[2001:db8::1]:5060"))
    assert targets.has_networks and targets.allows_address("192.0.2.1")
    assert not OutboundTargets(["gw.test"]).has_networks
    for bad in ["", "http://x", "a..b", "*.", "bad host"]:
        with pytest.raises(ValueError):
            OutboundTargets([bad] if bad else ["*"])
