"""One expertline process: which services run for each role, and their lifecycle.

``serve`` builds a ``Node`` from settings: it checks the database, creates the services of the
requested role (runtime with its presence sources and SIP front; reporting), starts them in
order, serves HTTP with uvicorn, and on SIGTERM/SIGINT stops HTTP first, then the services in
reverse order, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import uvicorn
from sqlalchemy import Engine

from expertline.config.source import Builder
from expertline.db import migrate
from expertline.db.claim import SqliteClaim
from expertline.db.engine import DatabaseError, is_sqlite, make_engine
from expertline.feeds.delivery import create_record_feeds
from expertline.ha.keeper import LeaseKeeper
from expertline.ha.lease import LeaseStore
from expertline.ha.watch import LeaseWatch
from expertline.health import Health
from expertline.loops import loop_factory
from expertline.presence.service import create_presence_sources
from expertline.reporting.service import create_reporting
from expertline.runtime.service import RuntimeService, create_runtime
from expertline.settings import Settings, parse_host_port
from expertline.sip.front import create_sip_front
from expertline.web.app import AppContext, create_app
from expertline.web.nodes import create_node_beacon

log = logging.getLogger("expertline.node")


class Service(Protocol):
    async def async_start(self) -> None: ...

    async def async_stop(self) -> None: ...


class StartupError(Exception):
    """The node cannot start; the message is one line for the operator."""


def runs_runtime(settings: Settings) -> bool:
    return settings.role in ("runtime", "all")


def runs_reporting(settings: Settings) -> bool:
    return settings.role in ("reporting", "all")


def prepare_database(settings: Settings, auto_migrate: bool | None = None) -> Engine:
    """An engine on a reachable, current schema. SQLite is migrated on the spot (single node);
    PostgreSQL must be upgraded explicitly with ``expertline db upgrade``."""
    engine = make_engine(settings.db_url)
    if auto_migrate is None:
        auto_migrate = is_sqlite(settings.db_url)
    if auto_migrate:
        migrate.upgrade(engine)
    migrate.require_current(engine)
    return engine


@dataclass
class Node:
    settings: Settings
    engine: Engine
    ctx: AppContext = field(init=False)
    services: list[tuple[str, Service]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ctx = AppContext(self.settings, self.engine)
        self.ctx.services.node = self

    @property
    def health(self) -> Health:
        return self.ctx.services.health

    def build(self) -> None:
        """Create the services of this node's role (not started yet)."""
        s = self.settings
        # Every node tells the pages of the pair where it is.
        self.services.append(("web", create_node_beacon(self.ctx)))
        if runs_runtime(s):
            self._build_runtime()
        if runs_reporting(s):
            reporting = create_reporting(self.ctx)
            self.ctx.services.reporting = reporting
            self.services.append(("reporting", reporting))

    def _build_runtime(self) -> None:
        s = self.settings
        runtime = create_runtime(self.ctx)
        self.ctx.services.runtime = runtime
        if is_sqlite(s.db_url):
            self.services.append(("runtime", runtime))  # a single node: always active
        else:
            self.services.append(("runtime", self._lease_keeper(runtime)))
        if s.presence:
            sources = create_presence_sources(self.ctx, runtime)
            self.ctx.services.presence_sources = sources
            for source in sources:
                self.services.append((f"presence:{source.id}", source))
        if s.sip:
            try:
                front = create_sip_front(self.ctx, runtime)
            except ValueError as exc:  # incomplete or malformed SIP trust settings
                raise StartupError(f"SIP front: {exc}") from exc
            self.ctx.services.sip = front
            self.services.append(("sip", front))
        if s.record_feeds:
            try:
                feeds = self.ctx.services.record_feeds = create_record_feeds(self.ctx, runtime)
            except ValueError as exc:  # a target's secret is missing or too short
                raise StartupError(str(exc)) from exc
            self.services.append(("record_feeds", feeds))

    def _lease_keeper(self, runtime: RuntimeService) -> Service:
        """On PostgreSQL the runtime runs only while this node holds the HA lease."""
        s = self.settings
        times = s.lease_times()
        engine = self.engine
        keeper = LeaseKeeper(
            LeaseStore(engine, timeout=times.retry_timeout),
            runtime,
            node=s.node,
            health=self.health,
            times=times,
            watch=LeaseWatch.for_engine(engine),
            # A standby builds the stored configuration once (imports, CEL parser), so that
            # its runtime's start after a takeover does not pay for it.
            warm=lambda: asyncio.to_thread(Builder(engine)),
        )
        self.ctx.services.lease = keeper
        return keeper

    async def async_start(self) -> None:
        self.health.report("database", True, self.engine.url.get_backend_name())
        started: list[tuple[str, Service]] = []
        try:
            for name, service in self.services:
                await service.async_start()
                started.append((name, service))
                log.info("service started name=%s", name)
        except BaseException:
            for name, service in reversed(started):
                with contextlib.suppress(Exception):
                    await service.async_stop()
                log.info("service stopped name=%s reason=startup-failed", name)
            raise

    async def async_stop(self) -> None:
        for name, service in reversed(self.services):
            try:
                await asyncio.wait_for(service.async_stop(), timeout=15)
                log.info("service stopped name=%s", name)
            except Exception as exc:  # keep stopping the others
                log.warning("service stop failed name=%s error=%r", name, exc)


async def async_serve(settings: Settings, setup: Callable[[Engine], None] | None = None) -> int:
    """Run a node until SIGTERM/SIGINT; returns the exit code.

    Nothing changes before the node can serve: the HTTP port is bound and a runtime on SQLite
    holds its claim on the database (``db/claim.py``) before the schema is migrated and before
    ``setup`` (the demo's configuration and token) runs on the engine."""
    host, port = parse_host_port(settings.http)
    sock = bind_http(host, port)
    claim = SqliteClaim.for_url(settings.db_url) if runs_runtime(settings) else None
    try:
        if claim is not None:
            claim.acquire()
        engine = prepare_database(settings)
        if setup is not None:
            setup(engine)
    except BaseException as exc:
        sock.close()
        if claim is not None:
            claim.release()
        if isinstance(exc, DatabaseError):
            raise StartupError(str(exc)) from exc
        raise
    try:
        return await _async_run(settings, engine, sock, host, port)
    finally:
        if claim is not None:
            claim.release()


async def _async_run(
    settings: Settings, engine: Engine, sock: socket.socket, host: str, port: int
) -> int:
    node = Node(settings, engine)
    node.build()
    app = create_app(node.ctx)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    await node.async_start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        config.load()
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
        except SystemExit as exc:
            raise StartupError(f"HTTP server failed to start on {settings.http}") from exc
        log.info(
            "node ready node=%s role=%s http=%s:%d sip=%s db=%s",
            settings.node,
            settings.role,
            host,
            port,
            settings.sip or "-",
            engine.url.get_backend_name(),
        )
        main_loop = asyncio.create_task(server.main_loop())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({main_loop, stopper}, return_when=asyncio.FIRST_COMPLETED)
        log.info("stopping node=%s reason=signal", settings.node)
        server.should_exit = True
        await main_loop
        await server.shutdown()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await node.async_stop()
        engine.dispose()
    return 0


def bind_http(host: str, port: int) -> socket.socket:
    """Bind the HTTP socket up front so a busy port is one clear error, before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, setup: Callable[[Engine], None] | None = None) -> int:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(async_serve(settings, setup))
