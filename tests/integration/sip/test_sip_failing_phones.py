"""Experts whose phones fail at once (404, 482): the front reports each failure to the core
as a failed delivery at once; the core's per-expert ``delivery_cooldown`` keeps the same phone
from being called again within it, ``max_delivery_failures`` takes the expert out, and the
task ends as the queue's ``on_max_wait`` says."""

from __future__ import annotations

import itertools
import re

import pytest
from sip_harness import ENTRY, SipHarness, sip_config

from expertline.routing.model import OnMaxWait
from support.sipp import Sipp

pytestmark = pytest.mark.sipp

COOLDOWN = 2.0
MAX_WAIT = 6.0


def invites(phone: Sipp) -> list[float]:
    """When the phone got each INVITE (seconds, sipp's clock)."""
    return [int(ms) / 1000 for ms in re.findall(r"invite at=(\d+)", phone.logs())]


async def failing_phones(sip: SipHarness, **queue: object) -> dict[str, Sipp]:
    phones = {
        # every INVITE of the task has its Call-ID: a phone forgets a call at once
        expert: sip.sipp.phone(scenario, calls=1000, extra=["-deadcall_wait", "100"])
        for expert, scenario in (
            ("alice", "phone_not_found"),
            ("bob", "phone_loop"),
            ("carol", "phone_not_found"),
        )
    }
    config = sip_config(
        {expert: f"sip:1001@{phone.uri_host}" for expert, phone in phones.items()},
        may_decline=False,
        max_wait=MAX_WAIT,
        on_max_wait=OnMaxWait("reject"),
        **queue,
    )
    await sip.start(config, mode="proxy")
    await sip.available(*phones)
    return phones


async def test_failing_phones_get_one_invite_per_cooldown_and_the_task_ends_at_max_wait(
    sip: SipHarness,
) -> None:
    phones = await failing_phones(sip, delivery_cooldown=COOLDOWN, max_delivery_failures=100)
    caller = sip.sipp.caller("caller_rejected", sip.remote, ENTRY, timeout=MAX_WAIT + 10)
    await sip.finish(caller)
    assert "status=480" in caller.logs()
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 22
    for expert, phone in phones.items():
        phone.stop()
        times = invites(phone)
        assert 1 <= len(times) <= MAX_WAIT / COOLDOWN + 1, (expert, times)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= COOLDOWN * 0.9 for gap in gaps), (expert, gaps)


async def test_an_expert_whose_phone_keeps_failing_is_taken_out(sip: SipHarness) -> None:
    phones = await failing_phones(sip, delivery_cooldown=0.5, max_delivery_failures=2)
    caller = sip.sipp.caller("caller_rejected", sip.remote, ENTRY, timeout=MAX_WAIT + 10)
    await sip.finish(caller)
    assert (await sip.one_tcd())["call_disposition"] == 22
    for phone in phones.values():
        phone.stop()
        assert len(invites(phone)) == 2  # then the expert is out: no third INVITE
