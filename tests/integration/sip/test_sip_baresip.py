"""baresip as the expert's phone (headless, answering by itself) and as the caller: proxied
calls through the front, directly and behind Kamailio, answered and hung up either side."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sip_harness import ENTRY, SipHarness, sip_config

from support.baresip import BaresipPhone
from support.kamailio import KamailioPool
from support.wait import async_eventually

pytestmark = pytest.mark.sipp


@pytest.mark.parametrize("through_kamailio", [False, True])
async def test_baresip_answers_a_proxied_call_as_the_experts_phone(
    sip: SipHarness,
    kamailio: KamailioPool,
    baresip: Callable[..., BaresipPhone],
    through_kamailio: bool,
) -> None:
    phone = baresip()
    await sip.start(sip_config({"alice": phone.uri}), mode="proxy")
    await sip.available("alice")
    remote = kamailio.documented(sip.remote).remote if through_kamailio else sip.remote
    caller = sip.sipp.caller("caller_proxy", remote, ENTRY, pause_ms=1000)
    await sip.accept_next_offer("alice")
    await sip.finish(caller)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 13 and tcd["expert_id"] == "alice"
    assert 0.9 <= tcd["talk_time"] < 5.0

    def hung_up() -> bool:
        out = phone.output()
        return "Call established" in out and "session closed" in out

    await async_eventually(hung_up, timeout=5.0)


@pytest.mark.parametrize("through_kamailio", [False, True])
async def test_baresip_calls_an_entry_point_and_the_expert_hangs_up(
    sip: SipHarness,
    kamailio: KamailioPool,
    baresip: Callable[..., BaresipPhone],
    through_kamailio: bool,
) -> None:
    phone = sip.sipp.phone("phone_answer_hangup", pause_ms=800)
    await sip.start(sip_config({"dave": f"sip:1004@{phone.uri_host}"}, may_decline=False))
    await sip.available("dave")
    assert sip.front is not None
    sip.front.mode = "proxy"
    remote = kamailio.documented(sip.remote).remote if through_kamailio else sip.remote
    caller = baresip(dial=f"sip:{ENTRY}@{remote}")
    await sip.finish(phone)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 13 and tcd["expert_id"] == "dave"
    assert 0.7 <= tcd["talk_time"] < 5.0

    def hung_up() -> bool:
        # The BYE relayed to the caller ends the call ("terminated"); when the phone's process
        # is gone first, the caller's media socket gets the ICMP error and baresip closes the
        # session itself ("session closed"). Either way the caller's call ended.
        out = caller.output()
        ended = "terminated" in out or "session closed" in out
        assert "Call established" in out and ended, out[-2000:]
        return True

    await async_eventually(hung_up, timeout=5.0)
