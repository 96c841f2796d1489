"""baresip as the expert's phone (headless, answering by itself): a proxied call reaches it
through the front, directly and behind Kamailio, is answered, and the caller's BYE ends it."""

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
    baresip: Callable[[], BaresipPhone],
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
