"""Redirect mode end to end: sipp callers, the SIP front, the real runtime, REST accepts."""

from __future__ import annotations

import re

import pytest
from sip_harness import ENTRY, SipHarness, sip_config

from expertline.routing.model import OnMaxWait

pytestmark = pytest.mark.sipp

ALICE = "sip:1001@127.0.0.1:5999"


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_caller_is_redirected_to_the_phone_of_the_expert_who_accepted(
    sip_any_db: SipHarness, transport: str
) -> None:
    sip = sip_any_db
    await sip.start(sip_config({"alice": ALICE}))
    await sip.available("alice")
    caller = sip.sipp.caller("caller_redirect", sip.remote, ENTRY, transport=transport)
    offer = await sip.accept_next_offer("alice")
    await sip.finish(caller)
    assert f"contact=<{ALICE}>" in caller.logs()

    tcd = await sip.one_tcd()
    assert tcd["task_id"] == offer["task_id"]
    assert tcd["call_disposition"] == 13
    assert tcd["dialed_number"] == ENTRY
    assert tcd["ani"] == "+15557654321"  # P-Asserted-Identity wins over From
    assert tcd["expert_id"] == "alice"
    assert tcd["talk_time"] == 0  # the 302 hands the call off: expertline never sees it talk
    rcds = await sip.records("rcd")
    assert [r["label"] for r in rcds] == [ALICE]
    assert sip.front is not None and sip.front.stats.get("final_302") == 1
    assert sip.client is not None
    metrics = (await sip.client.get("/metrics")).text
    for code in ("100", "182", "302"):  # at least once (UDP may retransmit)
        sent = re.search(
            rf'expertline_sip_responses_total{{code="{code}",direction="sent"}} (\S+)', metrics
        )
        assert sent is not None and float(sent.group(1)) >= 1, code


async def test_headers_become_the_task_request(sip: SipHarness) -> None:
    await sip.start(sip_config({"alice": ALICE}))
    await sip.available("alice")
    caller = sip.sipp.caller("caller_redirect", sip.remote, ENTRY)
    await sip.accept_next_offer("alice")
    await sip.finish(caller)
    assert sip.port is not None
    [request] = sip.port.requests
    assert request.entry_point == ENTRY and request.origin == "sip"
    assert request.caller == "+15557654321"
    assert request.attributes == {"account": "12345678", "customer_tier": "gold"}


async def test_expert_who_may_not_decline_gets_the_call_without_an_offer(sip: SipHarness) -> None:
    await sip.start(sip_config({"dave": ALICE}, may_decline=False))
    await sip.available("dave")
    caller = sip.sipp.caller("caller_redirect", sip.remote, ENTRY)
    await sip.finish(caller)
    assert f"contact=<{ALICE}>" in caller.logs()
    assert (await sip.one_tcd())["call_disposition"] == 13


async def test_unknown_number_is_404_and_creates_nothing(sip: SipHarness) -> None:
    await sip.start(sip_config({"alice": ALICE}))
    caller = sip.sipp.caller("caller_rejected", sip.remote, "+18009999999")
    await sip.finish(caller)
    assert "status=404" in caller.logs()
    assert await sip.records("tcd") == []


async def test_max_wait_without_fallback_is_480_with_tcd_22(sip: SipHarness) -> None:
    await sip.start(sip_config({"alice": ALICE}, max_wait=0.5))
    caller = sip.sipp.caller("caller_rejected", sip.remote, ENTRY)
    await sip.finish(caller)
    assert "status=480" in caller.logs()
    assert (await sip.one_tcd())["call_disposition"] == 22


async def test_max_wait_with_a_fallback_label_redirects_with_tcd_15(sip_any_db: SipHarness) -> None:
    sip = sip_any_db
    fallback = "sip:agents@127.0.0.1:5998"
    await sip.start(
        sip_config({"alice": ALICE}, max_wait=0.5, on_max_wait=OnMaxWait("label", fallback))
    )
    caller = sip.sipp.caller("caller_redirect", sip.remote, ENTRY)
    await sip.finish(caller)
    assert f"contact=<{fallback}>" in caller.logs()
    assert (await sip.one_tcd())["call_disposition"] == 15


async def test_caller_cancel_while_queued_is_487_and_abandons_with_tcd_2(
    sip_any_db: SipHarness,
) -> None:
    sip = sip_any_db
    await sip.start(sip_config({"alice": ALICE}))
    await sip.available("alice")
    caller = sip.sipp.caller("caller_cancel", sip.remote, ENTRY)
    await sip.finish(caller)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 2
