"""Proxy mode end to end: the call reaches a sipp phone through the front, which stays in the
path (Record-Route) and reports answer, hang-up, no answer and busy to the real runtime."""

from __future__ import annotations

from typing import Any

import pytest
from sip_harness import ENTRY, SipHarness, sip_config

from support.sipp import Sipp

pytestmark = pytest.mark.sipp


async def call_alice_then_bob(
    sip: SipHarness, alice_phone: Sipp, bob_phone: Sipp, **options: Any
) -> Sipp:
    """Proxy mode, alice available and bob not yet, each on a phone; a caller calls."""
    config = sip_config(
        {"alice": f"sip:1001@{alice_phone.uri_host}", "bob": f"sip:1002@{bob_phone.uri_host}"},
        **options,
    )
    await sip.start(config, mode="proxy")
    await sip.available("alice")
    return sip.sipp.caller("caller_proxy", sip.remote, ENTRY, pause_ms=300)


async def requeue_to_bob(sip: SipHarness) -> dict[str, Any]:
    """Alice goes offline; bob comes available and accepts the offer of the task."""
    await sip.available("alice", status="offline")
    await sip.available("bob")
    return await sip.accept_next_offer("bob")


@pytest.mark.parametrize("caller_transport", ["u1", "t1"])
async def test_call_reaches_the_phone_is_answered_and_leaves_tcd_13_with_talk_time(
    sip_any_db: SipHarness, caller_transport: str
) -> None:
    """A TCP caller and a UDP phone: the front records two routes and bridges transports."""
    sip = sip_any_db
    phone = sip.sipp.phone("phone_answer")
    await sip.start(sip_config({"alice": f"sip:1001@{phone.uri_host}"}), mode="proxy")
    await sip.available("alice")
    caller = sip.sipp.caller(
        "caller_proxy", sip.remote, ENTRY, pause_ms=1200, transport=caller_transport
    )
    await sip.accept_next_offer("alice")
    await sip.finish(caller)
    await sip.finish(phone)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 13
    assert tcd["expert_id"] == "alice"
    assert 1.0 <= tcd["talk_time"] < 5.0


async def test_the_expert_hangs_up_first(sip: SipHarness) -> None:
    phone = sip.sipp.phone("phone_answer_hangup", pause_ms=500)
    await sip.start(sip_config({"dave": f"sip:1004@{phone.uri_host}"}, may_decline=False))
    await sip.available("dave")
    assert sip.front is not None
    sip.front.mode = "proxy"
    caller = sip.sipp.caller("caller_wait_bye", sip.remote, ENTRY)
    await sip.finish(phone)
    await sip.finish(caller)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 13 and tcd["talk_time"] >= 0.4


async def test_no_answer_is_cancelled_at_ring_timeout_and_requeued_to_the_next_expert(
    sip_any_db: SipHarness,
) -> None:
    sip = sip_any_db
    silent = sip.sipp.phone("phone_no_answer")
    answering = sip.sipp.phone("phone_answer")
    caller = await call_alice_then_bob(sip, silent, answering, ring_timeout=1.0)
    first = await sip.accept_next_offer("alice")
    await sip.finish(silent)  # rang, was cancelled (200 + 487), got its ACK
    second = await requeue_to_bob(sip)
    assert second["task_id"] == first["task_id"]
    await sip.finish(caller)
    await sip.finish(answering)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 13 and tcd["expert_id"] == "bob"
    assert sip.front is not None
    assert sip.front.stats.get("outcome_completed") == 1


async def test_busy_phone_requeues_with_attempt_8(sip: SipHarness) -> None:
    busy = sip.sipp.phone("phone_busy")
    answering = sip.sipp.phone("phone_answer")
    caller = await call_alice_then_bob(sip, busy, answering)
    await sip.accept_next_offer("alice")
    await sip.finish(busy)
    await requeue_to_bob(sip)
    await sip.finish(caller)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 13 and tcd["expert_id"] == "bob"


async def test_caller_cancel_while_the_phone_rings_is_abandoned_ring_tcd_3(
    sip: SipHarness,
) -> None:
    silent = sip.sipp.phone("phone_no_answer")
    await sip.start(
        sip_config({"alice": f"sip:1001@{silent.uri_host}"}, ring_timeout=30.0), mode="proxy"
    )
    await sip.available("alice")
    caller = sip.sipp.caller("caller_cancel_ringing", sip.remote, ENTRY)
    await sip.accept_next_offer("alice")
    await sip.finish(caller)
    await sip.finish(silent)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 3


async def test_entry_point_mode_overrides_the_node_mode(sip: SipHarness) -> None:
    phone = sip.sipp.phone("phone_answer")
    await sip.start(
        sip_config({"dave": f"sip:1004@{phone.uri_host}"}, may_decline=False),
        mode="redirect",
        mode_for=lambda number: "proxy" if number == ENTRY else None,
    )
    await sip.available("dave")
    caller = sip.sipp.caller("caller_proxy", sip.remote, ENTRY, pause_ms=200)
    await sip.finish(caller)
    await sip.finish(phone)
    assert (await sip.one_tcd())["call_disposition"] == 13


async def test_entry_point_mode_comes_from_the_runtimes_routing_configuration(
    sip: SipHarness,
) -> None:
    """No ``mode_for`` given: the front asks the runtime's configuration (``sip_modes``)."""
    phone = sip.sipp.phone("phone_answer")
    config = sip_config(
        {"dave": f"sip:1004@{phone.uri_host}"}, may_decline=False, sip_modes={ENTRY: "proxy"}
    )
    await sip.start(config, mode="redirect")
    await sip.available("dave")
    caller = sip.sipp.caller("caller_proxy", sip.remote, ENTRY, pause_ms=200)
    await sip.finish(caller)
    await sip.finish(phone)
    assert (await sip.one_tcd())["call_disposition"] == 13
    assert sip.front is not None and sip.front.stats.get("outcome_completed") == 1


async def test_a_phone_answering_after_it_was_given_up_is_hung_up(sip: SipHarness) -> None:
    late = sip.sipp.phone("phone_answer_late")
    answering = sip.sipp.phone("phone_answer")
    caller = await call_alice_then_bob(sip, late, answering, ring_timeout=1.0)
    await sip.accept_next_offer("alice")
    await sip.finish(late)  # its late 200 OK was acknowledged, then it got a BYE
    await requeue_to_bob(sip)
    await sip.finish(caller)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 13 and tcd["expert_id"] == "bob"
