"""The SIP front behind Kamailio (Debian ``kamailio``, stateful ``t_relay``) with the
``kamailio.cfg`` documented in docs/sip.md: redirect mode (the 302 relayed to the caller, or
followed by Kamailio), proxy mode, UDP and TCP on either side, and the caller's CANCEL."""

from __future__ import annotations

import pytest
from sip_harness import ENTRY, SipHarness, sip_config

from support.kamailio import KamailioPool

pytestmark = pytest.mark.sipp

ALICE = "sip:1001@127.0.0.1:5999"


@pytest.mark.parametrize(("caller", "upstream"), [("u1", "udp"), ("t1", "udp"), ("u1", "tcp")])
async def test_redirect_mode_302_reaches_the_caller_through_kamailio(
    sip: SipHarness, kamailio: KamailioPool, caller: str, upstream: str
) -> None:
    await sip.start(sip_config({"alice": ALICE}))
    await sip.available("alice")
    proxy = kamailio.documented(sip.remote, transport=upstream)
    call = sip.sipp.caller("caller_redirect", proxy.remote, ENTRY, transport=caller)
    offer = await sip.accept_next_offer("alice")
    await sip.finish(call)
    assert f"contact=<{ALICE}>" in call.logs()
    tcd = await sip.one_tcd()
    assert tcd["task_id"] == offer["task_id"]
    assert tcd["call_disposition"] == 13 and tcd["expert_id"] == "alice"
    assert tcd["talk_time"] == 0


async def test_kamailio_follows_the_redirect_to_the_experts_phone(
    sip: SipHarness, kamailio: KamailioPool
) -> None:
    """``get_redirects``: Kamailio calls the phone from the 302's Contact; the caller is
    answered by the phone and never sees the 302."""
    phone = sip.sipp.phone("phone_answer")
    await sip.start(sip_config({"alice": f"sip:1001@{phone.uri_host}"}, may_decline=False))
    await sip.available("alice")
    proxy = kamailio.documented(sip.remote, defines=("FOLLOW_REDIRECTS",))
    call = sip.sipp.caller("caller_proxy", proxy.remote, ENTRY, pause_ms=300)
    await sip.finish(call)
    await sip.finish(phone)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 13 and tcd["talk_time"] == 0
    assert sip.front is not None and sip.front.stats.get("final_302") == 1


@pytest.mark.parametrize(("caller", "upstream"), [("u1", "udp"), ("u1", "tcp"), ("t1", "udp")])
async def test_proxy_mode_call_through_kamailio_is_answered_and_hung_up(
    sip: SipHarness, kamailio: KamailioPool, caller: str, upstream: str
) -> None:
    """Both record routes: ACK and BYE pass Kamailio and the front, across transports."""
    phone = sip.sipp.phone("phone_answer")
    await sip.start(sip_config({"alice": f"sip:1001@{phone.uri_host}"}), mode="proxy")
    await sip.available("alice")
    proxy = kamailio.documented(sip.remote, transport=upstream)
    call = sip.sipp.caller("caller_proxy", proxy.remote, ENTRY, pause_ms=800, transport=caller)
    await sip.accept_next_offer("alice")
    await sip.finish(call)
    await sip.finish(phone)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 13 and tcd["expert_id"] == "alice"
    assert 0.7 <= tcd["talk_time"] < 5.0


@pytest.mark.parametrize("upstream", ["udp", "tcp"])
async def test_caller_cancel_through_kamailio_abandons_the_task(
    sip: SipHarness, kamailio: KamailioPool, upstream: str
) -> None:
    await sip.start(sip_config({"alice": ALICE}))
    proxy = kamailio.documented(sip.remote, transport=upstream)
    call = sip.sipp.caller("caller_cancel", proxy.remote, ENTRY)
    await sip.finish(call)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 2
    assert sip.front is not None and sip.front.stats.get("outcome_abandoned") == 1


async def test_caller_cancel_while_the_phone_rings_through_kamailio(
    sip: SipHarness, kamailio: KamailioPool
) -> None:
    phone = sip.sipp.phone("phone_no_answer")
    await sip.start(sip_config({"alice": f"sip:1001@{phone.uri_host}"}), mode="proxy")
    await sip.available("alice")
    proxy = kamailio.documented(sip.remote)
    call = sip.sipp.caller("caller_cancel_ringing", proxy.remote, ENTRY)
    await sip.accept_next_offer("alice")
    await sip.finish(call)
    await sip.finish(phone)
    assert (await sip.one_tcd())["call_disposition"] == 3
