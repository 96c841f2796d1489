"""A caller's long wait in the queue behind a proxy: the 182 Queued refreshes on time, the
documented Kamailio configuration keeping the call past Kamailio's 180 s default (on timers
scaled down 60 times: 1 s of the test is a minute), and a CANCEL caused by an upstream timer
recorded as such, not as a caller who gave up."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from sip_harness import ENTRY, SipHarness, WireClient, sip_config

from expertline.routing.model import OnMaxWait
from expertline.sip.message import Response, new_branch, new_tag, parse_name_addr
from support.kamailio import KamailioPool

pytestmark = pytest.mark.sipp

PHONE = "sip:1001@127.0.0.1:5999"
SCALE = 60.0  # the test's seconds are the documentation's minutes
REFRESH = 60.0 / SCALE


class TimedResponses:
    """The responses a caller receives, with when each came."""

    def __init__(self, client: WireClient) -> None:
        self.client = client
        self.seen: list[tuple[float, Response]] = []

    async def until(self, done: int, timeout: float) -> Response:
        """Receive until a final response (returned) or ``done`` 182s were seen."""
        while True:
            response = await self.client.receive(timeout)
            self.seen.append((time.monotonic(), response))
            if response.status >= 200 or len(self.queued()) >= done:
                return response

    def queued(self) -> list[float]:
        return [at for at, r in self.seen if r.status == 182]


@pytest.fixture
async def caller() -> AsyncIterator[list[WireClient]]:
    clients: list[WireClient] = []
    yield clients
    for client in clients:
        client.close()


def dial(clients: list[WireClient], remote: str, **request: str) -> tuple[WireClient, bytes]:
    host, port = remote.rsplit(":", 1)
    client = WireClient((host, int(port)))
    clients.append(client)
    invite = client.request("INVITE", uri=f"sip:{ENTRY}@{remote}", **request)
    client.send(invite)
    return client, invite


async def test_queued_refreshes_come_at_the_configured_interval_from_the_first(
    sip: SipHarness, caller: list[WireClient]
) -> None:
    await sip.start(sip_config({"alice": PHONE}), refresh=0.5)
    client, _ = dial(caller, sip.remote)
    responses = TimedResponses(client)
    await responses.until(done=4, timeout=5.0)
    times = responses.queued()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3 and all(0.4 <= gap <= 0.75 for gap in gaps), gaps


async def test_a_refresh_due_while_the_phone_rang_goes_out_at_the_requeue(
    sip: SipHarness, caller: list[WireClient]
) -> None:
    """The phone rings (its 180 reaches the caller) past the refresh interval, to
    ring_timeout: the 182 that came due meanwhile goes out as the caller is queued again,
    not a whole interval later (the gap was ring_timeout + refresh: 80 s by default)."""
    silent = sip.sipp.phone("phone_no_answer")
    config = sip_config({"alice": f"sip:1001@{silent.uri_host}"}, ring_timeout=2.5)
    await sip.start(config, mode="proxy", refresh=1.0)
    await sip.available("alice")
    branch, call_id = new_branch(), f"requeue-{new_tag()}"
    client, _ = dial(caller, sip.remote, branch=branch, call_id=call_id)
    responses = TimedResponses(client)
    await responses.until(done=1, timeout=5.0)
    await sip.accept_next_offer("alice")
    ringing = await client.receive(5.0)
    rang_at = time.monotonic()
    assert ringing.status == 180
    requeued = await client.receive(5.0)
    assert requeued.status == 182
    assert 2.2 <= time.monotonic() - rang_at <= 3.1  # ring_timeout, not ring + refresh
    cancel = client.request(
        "CANCEL", uri=f"sip:{ENTRY}@{sip.remote}", branch=branch, call_id=call_id, cseq="1 CANCEL"
    )
    client.send(cancel)
    statuses = set()
    while statuses != {200, 487}:
        statuses.add((await client.receive()).status)
        statuses.discard(182)


@pytest.mark.parametrize("mode", ["redirect", "proxy"])
async def test_documented_kamailio_keeps_a_caller_queued_past_its_default_lifetime(
    sip: SipHarness, kamailio: KamailioPool, caller: list[WireClient], mode: str
) -> None:
    """250 s in the queue (4.2 s here), past Kamailio's default max_inv_lifetime (180 s, 3 s
    here) and many times its fr_inv_timer (120 s, 2 s here): the refreshes restart the
    latter, the documented max_inv_lifetime outlasts the wait; the caller gets the expert
    (redirected, or connected to the phone and hung up through both proxies)."""
    phone = sip.sipp.phone("phone_answer") if mode == "proxy" else None
    label = f"sip:1001@{phone.uri_host}" if phone is not None else PHONE
    config = sip_config({"alice": label}, max_wait=600 / SCALE)
    await sip.start(config, mode=mode, refresh=REFRESH)
    timers = {"fr_inv_timer": int(120_000 / SCALE), "max_inv_lifetime": int(900_000 / SCALE)}
    proxy = kamailio.documented(sip.remote, timers=timers)
    client, _ = dial(caller, proxy.remote)
    responses = TimedResponses(client)
    # 182 at once, then one a "minute": the sixth is the fifth refresh (5 minutes queued)
    assert (await responses.until(done=6, timeout=10.0)).status == 182
    await sip.available("alice")
    await sip.accept_next_offer("alice")
    final = await responses.until(done=99, timeout=10.0)
    queued = responses.queued()
    waited = responses.seen[-1][0] - queued[0]
    assert waited > 250 / SCALE and len(queued) >= 6
    if phone is None:
        assert final.status == 302, final
        assert final.headers.get("Contact") == f"<{PHONE}>"
    else:
        assert final.status == 200, final
        hang_up(client, proxy.remote, final)
        assert (await client.receive()).status == 200  # the BYE's
        await sip.finish(phone)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 13 and tcd["delay_time"] > 250 / SCALE


def hang_up(client: WireClient, remote: str, ok: Response) -> None:
    """ACK the 2xx and send BYE along its route set (RFC 3261 §12.1.2: the Record-Route in
    reverse), to the Contact it named."""
    routes = ", ".join(reversed(ok.headers.get_all("Record-Route")))
    target = parse_name_addr(ok.headers.get("Contact") or "").uri
    dialog = {"To": ok.headers.get("To") or "", "Route": routes}
    call_id = ok.headers.get("Call-ID") or ""
    client.send(
        client.request("ACK", uri=str(target), call_id=call_id, cseq="1 ACK", headers=dialog)
    )
    client.send(
        client.request("BYE", uri=str(target), call_id=call_id, cseq="2 BYE", headers=dialog)
    )


async def test_kamailio_default_lifetime_cuts_the_wait_and_the_record_says_so(
    sip: SipHarness, kamailio: KamailioPool, caller: list[WireClient]
) -> None:
    """Kamailio's defaults (scaled): the caller gets 408 at max_inv_lifetime whatever the
    refreshes (this is what the documented max_inv_lifetime prevents), and Kamailio's own
    CANCEL, which carries no Reason, comes at the INVITE lifetime the front knows: TCD 1."""
    await sip.start(
        sip_config({"alice": PHONE}, max_wait=300 / SCALE),
        refresh=REFRESH,
        upstream_lifetime=180 / SCALE,
    )
    timers = {"fr_inv_timer": int(120_000 / SCALE), "max_inv_lifetime": int(180_000 / SCALE)}
    proxy = kamailio.documented(sip.remote, timers=timers)
    client, _ = dial(caller, proxy.remote)
    responses = TimedResponses(client)
    final = await responses.until(done=99, timeout=10.0)
    assert final.status == 408
    assert 170 / SCALE <= responses.seen[-1][0] - responses.queued()[0] <= 200 / SCALE
    tcd = await sip.one_tcd()
    assert (tcd["call_disposition"], tcd["status"]) == (1, "failed")


@pytest.mark.parametrize("through_kamailio", [False, True])
async def test_a_cancel_without_reason_is_the_callers_unless_a_proxy_relays_it_at_its_lifetime(
    sip: SipHarness, kamailio: KamailioPool, caller: list[WireClient], through_kamailio: bool
) -> None:
    """A caller's own CANCEL at the INVITE lifetime's age: sent directly (one Via) it is the
    caller's (TCD 2); relayed by a proxy at that age it is taken for the proxy's timer (1).
    Long before the lifetime, a relayed CANCEL is the caller's too (test_sip_kamailio)."""
    lifetime = 1.5
    await sip.start(sip_config({"alice": PHONE}), upstream_lifetime=lifetime)
    remote = kamailio.documented(sip.remote).remote if through_kamailio else sip.remote
    branch, call_id = new_branch(), f"wait-{new_tag()}"
    client, _ = dial(caller, remote, branch=branch, call_id=call_id)
    sent = time.monotonic()
    await TimedResponses(client).until(done=1, timeout=5.0)
    await asyncio.sleep(max(0.0, sent + lifetime - time.monotonic()))  # the age under test
    client.send(
        client.request(
            "CANCEL", uri=f"sip:{ENTRY}@{remote}", branch=branch, call_id=call_id, cseq="1 CANCEL"
        )
    )
    statuses = {r.status for r in [await client.receive(), await client.receive()]}
    assert statuses == {200, 487}
    tcd = await sip.one_tcd()
    expected = (1, "failed") if through_kamailio else (2, "abandoned")
    assert (tcd["call_disposition"], tcd["status"]) == expected


@pytest.mark.parametrize("through_kamailio", [False, True])
@pytest.mark.parametrize(
    ("reason", "disposition", "status"),
    [
        ('SIP;cause=408;text="Request Timeout"', 1, "failed"),
        ("Q.850;cause=102", 1, "failed"),
        ('Q.850;cause=16;text="Normal call clearing"', 2, "abandoned"),
        ("SIP;cause=", 2, "abandoned"),
    ],
)
async def test_a_cancel_caused_by_an_upstream_timer_is_recorded_as_such(
    sip: SipHarness,
    kamailio: KamailioPool,
    caller: list[WireClient],
    through_kamailio: bool,
    reason: str,
    disposition: int,
    status: str,
) -> None:
    """``Reason: SIP;cause=408`` (or Q.850 102, recovery on timer expiry) on the CANCEL: the
    network gave up, not the caller: TCD 1 (Abandoned in Network), status failed; any other
    Reason, or one that does not parse, is the caller's (2). Kamailio passes the Reason on."""
    await sip.start(sip_config({"alice": PHONE}, on_max_wait=OnMaxWait("reject")))
    remote = kamailio.documented(sip.remote).remote if through_kamailio else sip.remote
    branch, call_id = new_branch(), f"wait-{new_tag()}"
    client, _ = dial(caller, remote, branch=branch, call_id=call_id)
    responses = TimedResponses(client)
    await responses.until(done=1, timeout=5.0)
    client.send(
        client.request(
            "CANCEL",
            uri=f"sip:{ENTRY}@{remote}",
            branch=branch,
            call_id=call_id,
            cseq="1 CANCEL",
            headers={"Reason": reason},
        )
    )
    statuses = {r.status for r in [await client.receive(), await client.receive()]}
    assert statuses == {200, 487}
    tcd = await sip.one_tcd()
    assert (tcd["call_disposition"], tcd["status"]) == (disposition, status)
