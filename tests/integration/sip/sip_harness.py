"""Helpers for SIP tests: the SIP front on loopback in front of a real RuntimeService (real database, real HTTP app).

Experts accept through the REST channel (``POST /api/v1/offers/{id}/accept``) or may not
decline (no offer round trip). Expert phones and callers are sipp processes (``support.sipp``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from expertline.routing.model import ExpertSpec, OnMaxWait, QueueSpec, RoutingConfig
from expertline.runtime.ports import TaskRequest, TaskView
from expertline.runtime.service import RuntimeService
from expertline.security.tokens import create_token
from expertline.settings import Settings
from expertline.sip.front import SipFront
from expertline.sip.message import Response, StreamFramer, new_branch, new_tag, parse_message
from expertline.sip.transaction import TimerValues
from expertline.sip.trust import AttachPolicy, OutboundTargets
from expertline.web.app import AppContext, create_app
from support.sipp import SippPool
from support.wait import async_eventually

ENTRY = "+18005550100"
FAST_TIMERS = TimerValues(t1=0.1, t2=0.4, t4=0.5, timer_d=0.5)


def sip_config(
    phones: dict[str, str],
    may_decline: bool = True,
    entry_points: dict[str, str] | None = None,
    sip_modes: dict[str, Any] | None = None,
    **queue_options: Any,
) -> RoutingConfig:
    """One queue ``billing`` served by every expert in ``phones`` (expert id -> label);
    ``sip_modes``: entry points' own SIP modes (dialed number -> redirect | proxy)."""
    experts = {
        eid: ExpertSpec(
            id=eid,
            name=eid.title(),
            phone=phone,
            im=f"{eid}@example.test",
            may_decline=may_decline,
        )
        for eid, phone in phones.items()
    }
    options: dict[str, Any] = {
        "offer_to": 1,
        "offer_timeout": 30.0,
        "max_wait": 60.0,
        "on_max_wait": OnMaxWait("reject"),
    }
    options.update(queue_options)
    queue = QueueSpec(id="billing", name="Billing", **options)
    return RoutingConfig(
        version=1,
        experts=experts,
        queues={"billing": queue},
        matches={"billing": (frozenset(phones),)},
        entry_points=entry_points or {ENTRY: "billing"},
        sip_modes=sip_modes or {},
    )


class RecordingPort:
    """The real runtime, with a record of the task requests the front made (a spy, no stub)."""

    def __init__(self, service: RuntimeService) -> None:
        self.service = service
        self.requests: list[TaskRequest] = []

    async def async_create_task(self, request: TaskRequest) -> TaskView:
        self.requests.append(request)
        return await self.service.async_create_task(request)

    async def async_create_task_ex(self, request: TaskRequest) -> tuple[TaskView, bool]:
        self.requests.append(request)
        return await self.service.async_create_task_ex(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service, name)


@dataclass
class SipHarness:
    engine: Engine
    workdir: Path
    sipp: SippPool
    service: RuntimeService | None = None
    port: RecordingPort | None = None
    front: SipFront | None = None
    client: httpx.AsyncClient | None = None
    ex: dict[str, str] = field(default_factory=dict)
    rc: dict[str, str] = field(default_factory=dict)

    @property
    def remote(self) -> str:
        assert self.front is not None
        return f"127.0.0.1:{self.front.sip_port}"

    async def start(
        self,
        config: RoutingConfig,
        mode: str = "redirect",
        mode_for: Callable[[str], Any] | None = None,
        attach: AttachPolicy | None = None,
        targets: tuple[str, ...] = (),
        refresh: float = 60.0,
        upstream_lifetime: float = 180.0,
    ) -> None:
        self.service = RuntimeService(
            self.engine,
            node="test-node",
            config_loader=lambda _e: (config, None),
            version_probe=lambda _e: config.version,
        )
        await self.service.async_start()
        self.port = RecordingPort(self.service)
        self.front = SipFront(
            self.port,
            "127.0.0.1",
            0,
            mode=mode,
            mode_for=mode_for,
            timers=FAST_TIMERS,  # type: ignore[arg-type]
            attach=attach,
            targets=OutboundTargets(targets, config=lambda: config),
            refresh=refresh,
            upstream_lifetime=upstream_lifetime,
        )
        await self.front.async_start()
        ctx = AppContext(Settings(node="test-node"), self.engine)
        ctx.services.runtime = self.service
        ctx.services.sip = self.front
        # an integration acting for every expert
        self.ex = {"Authorization": f"Bearer {create_token(self.engine, 'ex', 'admin')}"}
        self.rc = {"Authorization": f"Bearer {create_token(self.engine, 'rc', 'routing-client')}"}
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(ctx)), base_url="http://expertline.test"
        )

    async def available(self, *experts: str, status: str = "available") -> None:
        assert self.service is not None
        for expert in experts:
            await self.service.async_set_presence(expert, status, "test")  # type: ignore[arg-type]

    async def accept_next_offer(
        self, expert: str, timeout: float = 10.0, phone: str | None = None
    ) -> dict[str, Any]:
        """Wait for an open offer to ``expert`` and accept it through the REST channel
        (``phone``: the expert asks for the call on that phone instead)."""
        assert self.client is not None

        async def offer() -> dict[str, Any] | None:
            r = await self.client.get(  # type: ignore[union-attr]
                f"/api/v1/offers?expert={expert}&status=open", headers=self.ex
            )
            items = r.json()["items"]
            return items[0] if items else None

        found = await async_eventually(offer, timeout=timeout)
        body = {"phone": phone} if phone is not None else None
        r = await self.client.post(
            f"/api/v1/offers/{found['id']}/accept", headers=self.ex, json=body
        )
        assert r.status_code == 200, r.text
        return found

    async def records(self, kind: str) -> list[dict[str, Any]]:
        assert self.client is not None
        r = await self.client.get(f"/api/v1/records/{kind}?limit=1000", headers=self.rc)
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def create_http_task(self, **fields: Any) -> dict[str, Any]:
        """A task created by a routing client over HTTP (``entry_point`` defaults to ENTRY)."""
        assert self.client is not None
        r = await self.client.post(
            "/api/v1/tasks", headers=self.rc, json={"entry_point": ENTRY, **fields}
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def http_task(self, task_id: str) -> dict[str, Any]:
        assert self.client is not None
        r = await self.client.get(f"/api/v1/tasks/{task_id}", headers=self.rc)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def events(self, type_: str) -> list[dict[str, Any]]:
        assert self.client is not None
        r = await self.client.get(
            "/api/v1/events", params={"type": type_, "limit": 1000}, headers=self.rc
        )
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def one_tcd(self, timeout: float = 10.0) -> dict[str, Any]:
        async def tcd() -> dict[str, Any] | None:
            rows = await self.records("tcd")
            assert len(rows) <= 1, rows
            return rows[0] if rows else None

        return await async_eventually(tcd, timeout=timeout)

    async def finish(self, sipp_process: Any, timeout: float = 30.0) -> None:
        """Wait (off the event loop) for a sipp process to succeed."""
        await asyncio.to_thread(sipp_process.assert_succeeded, timeout)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self.front is not None:
            await self.front.async_stop()
        if self.service is not None:
            await self.service.async_stop()


class WireClient:
    """A hand-driven SIP peer on a UDP socket (or a TCP stream) for protocol-level tests."""

    def __init__(self, remote: tuple[str, int], transport: str = "udp") -> None:
        import socket

        self.remote = remote
        self.transport = transport
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind(("127.0.0.1", 0))
        if transport == "tcp":
            self.sock.connect(remote)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self._framer = StreamFramer()
        self._frames: list[bytes] = []

    def request(
        self,
        method: str = "INVITE",
        uri: str = f"sip:{ENTRY}@127.0.0.1",
        branch: str | None = None,
        call_id: str | None = None,
        cseq: str | None = None,
        headers: dict[str, str] | None = None,
        drop: tuple[str, ...] = (),
    ) -> bytes:
        fields = {
            "Via": f"SIP/2.0/{self.transport.upper()} 127.0.0.1:{self.port};branch={branch or new_branch()};rport",
            "Max-Forwards": "70",
            "From": f"<sip:+15551234567@127.0.0.1:{self.port}>;tag=wire1",
            "To": f"<{uri}>",
            "Call-ID": call_id or f"wire-{new_tag()}",
            "CSeq": cseq or f"1 {method}",
            "Contact": f"<sip:caller@127.0.0.1:{self.port}>",
        }
        fields.update(headers or {})
        lines = [f"{method} {uri} SIP/2.0"] + [
            f"{k}: {v}" for k, v in fields.items() if k not in drop
        ]
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    def send(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, self.remote)
        else:
            self.sock.sendall(data)

    def _pull(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except BlockingIOError:
                return
            if not data:
                return
            if self.transport == "udp":
                self._frames.append(data)
            else:
                self._frames.extend(self._framer.feed(data))

    async def receive(self, timeout: float = 5.0) -> Response:
        """The next response (requests to us are not expected in these tests)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            self._pull()
            if self._frames:
                message = parse_message(self._frames.pop(0), stream=self.transport == "tcp")
                assert isinstance(message, Response), message
                return message
            if time.monotonic() > deadline:
                raise AssertionError("no response within the timeout")
            await asyncio.sleep(0.005)

    async def receive_final(self, timeout: float = 5.0) -> tuple[list[int], Response]:
        """Provisional statuses seen, then the final response."""
        seen: list[int] = []
        while True:
            response = await self.receive(timeout)
            if response.status >= 200:
                return seen, response
            seen.append(response.status)

    async def silence(self, seconds: float) -> list[Response]:
        """Everything received during ``seconds`` (for 'nothing more happens' checks)."""
        await asyncio.sleep(seconds)
        self._pull()
        out = [parse_message(f, stream=self.transport == "tcp") for f in self._frames]
        self._frames.clear()
        return [m for m in out if isinstance(m, Response)]

    def close(self) -> None:
        self.sock.close()
