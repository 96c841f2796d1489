"""Phones that fail at once, through the SIP front in proxy mode: no storm of INVITEs.

The expert's phone (sipp) answers every INVITE with 486 at once. The task goes back to its
queue after each failure, and the expert is called again only after the queue's
``delivery_cooldown``; the task ends as ``on_max_wait`` says.

Each new INVITE to the phone carries the caller's Call-ID, so sipp is told to forget a
finished call at once (``-deadcall_wait``) and take the next INVITE as a new call.
"""

from __future__ import annotations

import pytest
from sip_harness import ENTRY, SipHarness, sip_config

pytestmark = pytest.mark.sipp


async def test_a_phone_that_fails_at_once_gets_one_invite_per_cooldown(sip: SipHarness) -> None:
    busy = sip.sipp.phone("phone_busy", calls=4, extra=["-deadcall_wait", "1"])
    config = sip_config(
        {"dave": f"sip:1004@{busy.uri_host}"},
        may_decline=False,  # no offer to accept: the front calls the phone at once
        delivery_cooldown=1.5,
        max_delivery_failures=0,
        max_wait=5.0,
    )
    await sip.start(config, mode="proxy")
    await sip.available("dave")
    caller = sip.sipp.caller("caller_rejected", sip.remote, ENTRY)
    await sip.finish(caller)  # 480 at max wait
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 22
    requeued = [e["data"] for e in await sip.events("task.requeued")]
    assert [r["disposition"] for r in requeued] == [8] * 4  # calls at 0, 1.5, 3 and 4.5 s
    await sip.finish(busy)  # it took exactly its four calls


async def test_a_phone_that_keeps_failing_takes_its_expert_out(sip: SipHarness) -> None:
    busy = sip.sipp.phone("phone_busy", calls=3, extra=["-deadcall_wait", "1"])
    config = sip_config(
        {"dave": f"sip:1004@{busy.uri_host}"},
        may_decline=False,
        delivery_cooldown=0.5,
        max_delivery_failures=3,
        max_wait=4.0,
    )
    await sip.start(config, mode="proxy")
    await sip.available("dave")
    caller = sip.sipp.caller("caller_rejected", sip.remote, ENTRY)
    await sip.finish(caller)
    assert (await sip.one_tcd())["call_disposition"] == 22
    assert len(await sip.events("task.requeued")) == 3
    await sip.finish(busy)
    presence = [e["data"] for e in await sip.events("expert.presence")]
    assert presence[-1]["status"] == "away"
    assert presence[-1]["source"] == "max_delivery_failures"
