"""SIP over UDP and TCP on asyncio: bytes in, bytes out, nothing else.

One UDP socket and one TCP listener share the same port. TCP connections (accepted or opened
to reach a phone) are kept per remote address and framed with ``StreamFramer``; a connection
idle for ``idle_timeout`` seconds is closed, and opening one is bounded by ``connect_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from expertline.sip.message import ParseError, StreamFramer

log = logging.getLogger("expertline.sip.transport")

TransportName = Literal["udp", "tcp"]


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from, or where one goes."""

    transport: TransportName
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


Receiver = Callable[[bytes, Peer], None]
FailureHandler = Callable[[Peer], None]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.owner.receive(data, Peer("udp", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error error=%r", exc)


class _Tcp(asyncio.Protocol):
    def __init__(self, owner: SipTransport, peer: Peer | None = None) -> None:
        self.owner = owner
        self.peer = peer
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.last_used = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.peer is None:
            host, port = transport.get_extra_info("peername")[:2]
            self.peer = Peer("tcp", host, port)
        self.owner.connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        self.last_used = time.monotonic()
        try:
            frames = self.framer.feed(data)
        except ParseError as exc:
            log.info("tcp stream unreadable, closing peer=%s error=%s", self.peer, exc)
            self.transport.close()
            return
        for frame in frames:
            self.owner.receive(frame, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.owner.connections.get(self.peer) is self:
            del self.owner.connections[self.peer]

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.last_used = time.monotonic()
        self.transport.write(data)


class SipTransport:
    """UDP + TCP on one host:port. ``receive`` is called for every datagram or framed message."""

    def __init__(
        self,
        receiver: Receiver,
        on_failure: FailureHandler | None = None,
        connect_timeout: float = 5.0,
        idle_timeout: float = 300.0,
    ) -> None:
        self.receive = receiver
        self.on_failure = on_failure or (lambda peer: None)
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.connections: dict[Peer, _Tcp] = {}
        self.host = ""
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._pending: dict[Peer, list[bytes]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def async_start(self, host: str, port: int) -> None:
        """Bind UDP and TCP on the same port (port 0: one free port for both)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(20 if port == 0 else 1):
            udp_sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                udp_sock.bind((host, port))
            except OSError:
                udp_sock.close()
                raise
            bound = udp_sock.getsockname()[1]
            try:
                self._server = await loop.create_server(
                    lambda: _Tcp(self), host, bound, family=family, reuse_address=True
                )
            except OSError:
                udp_sock.close()
                if port != 0:
                    raise
                continue
            udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp_sock)
            self._udp = transport
            self.host, self.port = host, bound
            self._sweeper = asyncio.create_task(self._sweep_idle())
            return
        raise OSError(f"no free port for UDP and TCP together on {host}")

    async def async_stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for task in list(self._tasks):
            task.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self.connections.clear()

    def send(self, peer: Peer, data: bytes) -> None:
        if peer.transport == "udp":
            if self._udp is not None and not self._udp.is_closing():
                self._udp.sendto(data, (peer.host, peer.port))
            return
        conn = self.connections.get(peer)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.write(data)
            return
        queued = self._pending.get(peer)
        if queued is not None:
            queued.append(data)
            return
        self._pending[peer] = [data]
        task = asyncio.create_task(self._connect(peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: _Tcp(self, peer), peer.host, peer.port),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            self._pending.pop(peer, None)
            log.info("tcp connect failed peer=%s error=%r", peer, exc)
            self.on_failure(peer)
            return
        conn = self.connections.get(peer)
        for data in self._pending.pop(peer, []):
            if conn is not None:
                conn.write(data)

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.idle_timeout))
            cutoff = time.monotonic() - self.idle_timeout
            for peer, conn in list(self.connections.items()):
                if conn.last_used < cutoff and conn.transport is not None:
                    log.info("tcp connection idle, closing peer=%s", peer)
                    conn.transport.close()
