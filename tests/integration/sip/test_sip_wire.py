"""Protocol behaviour of the SIP front seen from a hand-driven socket, with the real runtime:
answers to bad or unsupported input, retransmissions and timers, UDP and TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sip_harness import ENTRY, FAST_TIMERS, RecordingPort, SipHarness, WireClient, sip_config

from expertline.errors import Unavailable
from expertline.health import Health
from expertline.runtime.ports import TaskRequest, TaskView
from expertline.settings import Settings
from expertline.sip.front import SipFront, create_sip_front
from expertline.web.app import AppContext
from support.wait import async_eventually

PHONE = "sip:1001@127.0.0.1:5999"


@pytest.fixture
async def started(wire: SipHarness) -> AsyncIterator[SipHarness]:
    await wire.start(sip_config({"alice": PHONE, "dave": PHONE}))
    yield wire


@pytest.fixture(params=["udp", "tcp"])
async def client(started: SipHarness, request: pytest.FixtureRequest) -> AsyncIterator[WireClient]:
    assert started.front is not None
    peer = WireClient(("127.0.0.1", started.front.sip_port), request.param)
    yield peer
    peer.close()


async def tasks_created(h: SipHarness) -> int:
    assert h.port is not None
    return len(h.port.requests)


async def test_options_is_answered_for_health_checks(client: WireClient) -> None:
    client.send(client.request("OPTIONS", uri="sip:127.0.0.1"))
    response = await client.receive()
    assert response.status == 200
    assert "INVITE" in (response.headers.get("Allow") or "")
    assert response.headers.get("CSeq") == "1 OPTIONS"


@pytest.mark.parametrize(
    "drop, headers, reason",
    [
        (("Call-ID",), {}, "missing Call-ID"),
        ((), {"CSeq": "1 BYE"}, "CSeq method"),
        ((), {"CSeq": "one INVITE"}, "bad CSeq"),
        ((), {"From": "<sip:broken"}, "unterminated"),
        ((), {"Max-Forwards": "lots"}, "Max-Forwards"),
        ((), {"X-Expertline-Priority": "high"}, "Priority"),
    ],
)
async def test_malformed_requests_get_400_and_change_nothing(
    started: SipHarness,
    client: WireClient,
    drop: tuple[str, ...],
    headers: dict[str, str],
    reason: str,
) -> None:
    client.send(client.request("INVITE", headers=headers, drop=drop))
    response = await client.receive()
    assert response.status == 400
    assert reason in response.reason
    assert await tasks_created(started) == 0


async def test_bytes_that_are_not_sip_are_dropped(started: SipHarness) -> None:
    assert started.front is not None
    peer = WireClient(("127.0.0.1", started.front.sip_port))
    peer.send(b"\x00\x01 hello there\r\n\r\n")
    peer.send(b"INVITE sip:x SIP/2.0\r\nno colon here\r\n\r\n")
    assert await peer.silence(0.3) == []
    peer.send(peer.request("OPTIONS"))  # and the front still works
    assert (await peer.receive()).status == 200
    peer.close()


@pytest.mark.parametrize(
    "method, status", [("MESSAGE", 405), ("REGISTER", 405), ("FROBNICATE", 501), ("BYE", 481)]
)
async def test_methods_we_do_not_serve(client: WireClient, method: str, status: int) -> None:
    client.send(client.request(method))
    response = await client.receive()
    assert response.status == status
    if status == 405:
        assert "INVITE" in (response.headers.get("Allow") or "")


async def test_max_forwards_zero_is_483(started: SipHarness, client: WireClient) -> None:
    client.send(client.request(headers={"Max-Forwards": "0"}))
    assert (await client.receive()).status == 483
    assert await tasks_created(started) == 0


async def test_unknown_extension_required_is_420(client: WireClient) -> None:
    client.send(client.request(headers={"Require": "100rel, foo"}))
    response = await client.receive()
    assert response.status == 420
    assert response.headers.get_all("Unsupported") == ["100rel", "foo"]


async def test_unsupported_uri_scheme_is_416(client: WireClient) -> None:
    client.send(client.request(uri="mailto:someone@example.test"))
    assert (await client.receive()).status == 416


async def test_unknown_number_is_404_and_cancel_without_invite_is_481(
    started: SipHarness, client: WireClient
) -> None:
    client.send(client.request(uri="sip:+18009999999@127.0.0.1"))
    seen, final = await client.receive_final()
    assert seen == [100] and final.status == 404
    assert final.to.tag  # a final response from us carries our To tag
    client.send(client.request("CANCEL"))
    assert (await client.receive()).status == 481
    assert await started.records("tcd") == []


async def test_retransmitted_invite_makes_one_task(started: SipHarness) -> None:
    assert started.front is not None
    peer = WireClient(("127.0.0.1", started.front.sip_port))
    invite = peer.request(branch="z9hG4bKretransmitted", call_id="retransmitted-1")
    peer.send(invite)
    assert (await peer.receive()).status == 100
    assert (await peer.receive()).status == 182
    peer.send(invite)  # the caller did not hear us: same transaction, the last response again
    assert (await peer.receive()).status == 182
    assert await tasks_created(started) == 1
    peer.close()


async def test_final_response_is_retransmitted_until_acked_timer_g(started: SipHarness) -> None:
    """UDP: the 404 is sent again at T1, 2*T1, ... (capped at T2) until the ACK arrives."""
    assert started.front is not None
    peer = WireClient(("127.0.0.1", started.front.sip_port))
    peer.send(peer.request(uri="sip:+18009999999@127.0.0.1", branch="z9hG4bKtimerg"))
    _, final = await peer.receive_final()
    # The same 404 again at T1 (0.1 s) and 2*T1 later: the caller has not acknowledged it.
    assert [(await peer.receive()).status for _ in range(2)] == [404, 404]
    ack = peer.request(
        "ACK",
        uri="sip:+18009999999@127.0.0.1",
        branch="z9hG4bKtimerg",
        cseq="1 ACK",
        headers={"To": final.headers.get("To") or ""},
    )
    peer.send(ack)
    key = ("z9hG4bKtimerg", "INVITE")

    def confirmed() -> bool:
        entry = started.front.layer.server_tx.get(key)  # type: ignore[union-attr]
        return entry is not None and entry.tx.state == "confirmed"

    await async_eventually(confirmed, timeout=5)
    await peer.silence(0.05)  # a retransmission may have crossed the ACK on the wire
    assert await peer.silence(0.6) == []  # Timer G stopped: nothing more
    peer.close()


async def test_create_sip_front_reads_the_node_settings_and_reports_health(
    started: SipHarness,
) -> None:
    ctx = AppContext(Settings(node="n1", sip="127.0.0.1:0", sip_mode="proxy"), started.engine)
    health = Health()
    ctx.services.health = health
    assert started.port is not None
    front = create_sip_front(ctx, started.port)  # the real runtime, requests recorded
    await front.async_start()
    try:
        assert front.mode == "proxy" and front.sip_port > 0
        assert [c.up for c in health.components() if c.name == "sip"] == [True]
        peer = WireClient(("127.0.0.1", front.sip_port))
        peer.send(peer.request("OPTIONS"))
        assert (await peer.receive()).status == 200
        health.active = False  # HA: this node became the standby
        peer.send(peer.request("OPTIONS"))
        assert (await peer.receive()).status == 503
        peer.send(peer.request("INVITE"))
        refused = await peer.receive()
        assert refused.status == 503 and refused.headers.get("Retry-After") == "5"
        assert started.port.requests == []  # nothing was created on the standby
        peer.close()
    finally:
        await front.async_stop()
    assert [c.up for c in health.components() if c.name == "sip"] == [False]


async def test_priority_and_external_id_headers(started: SipHarness) -> None:
    assert started.front is not None and started.port is not None
    peer = WireClient(("127.0.0.1", started.front.sip_port))
    peer.send(
        peer.request(headers={"X-Expertline-Priority": "5", "X-Expertline-External-Id": "icm-42"})
    )
    assert (await peer.receive()).status == 100
    [request] = started.port.requests
    assert request.priority == 5 and request.external_id == "sip:icm-42"
    assert request.entry_point == ENTRY
    peer.close()


async def test_runtime_not_running_is_503(started: SipHarness, client: WireClient) -> None:
    assert started.service is not None
    await started.service.async_stop()
    client.send(client.request())
    seen, final = await client.receive_final()
    assert seen == [100] and final.status == 503
    assert final.headers.get("Retry-After") == "5"  # an upstream proxy tries again later


class StartingPort(RecordingPort):
    """The real runtime behind a port that says it is starting (``Unavailable``)."""

    async def async_create_task_ex(self, request: TaskRequest) -> tuple[TaskView, bool]:
        self.requests.append(request)
        raise Unavailable("the routing runtime is starting on this node", retry_after=5)


async def test_an_unavailable_runtime_is_503(started: SipHarness) -> None:
    assert started.service is not None
    port = StartingPort(started.service)
    front = SipFront(port, "127.0.0.1", 0, timers=FAST_TIMERS)  # type: ignore[arg-type]
    await front.async_start()
    try:
        client = WireClient(("127.0.0.1", front.sip_port))
        client.send(client.request())
        seen, final = await client.receive_final()
        assert seen == [100] and final.status == 503
        assert final.headers.get("Retry-After") == "5"
        assert len(port.requests) == 1 and front.stats.get("outcome_refused-503") == 1
        client.close()
    finally:
        await front.async_stop()
