"""``expertline bench xmpp``: IM offers and presence through a real Prosody and ejabberd.

Each server in turn (``--only prosody`` or ``--only ejabberd`` runs one; the ejabberd rows
are named ``ejabberd: …``, side by side with Prosody's). Set-up: a throwaway server on
loopback (ejabberd: the Debian default configuration, with the router exempt from the
``c2s_shaper``, as docs/xmpp.md says to do); the routing runtime on a temporary SQLite database
(or ``--bench-db``) with one broadcast-free queue (``offer_to: 1``) served by every expert;
the XMPP presence source in account mode; and ``1000 x scale`` expert clients (slixmpp) signed
in from a *separate process*, so the router's event loop does not share its CPU time with a
thousand clients' parsing (the way it would run in production).

Measured:

- **raw round trip**: client A → Prosody → client B → Prosody → client A, the floor any IM
  offer pays (p50/p99 over 200 echoes);
- **offer delivery** at 50 and 200 tasks/s: task created in the runtime → ``Offer #code``
  received by the expert's client (p50/p99); the clients ignore offers, so every task takes a
  fresh expert; target p99 ≤ 3 x raw round trip p99 + 5 ms;
- **presence storm**: every expert signs on at the same moment (all send available presence
  together) → time until the runtime has all of them available; target ≤ 2 s.

Clocks: both processes stamp with ``time.monotonic()`` (system-wide on Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing as mp
import os
import re
import ssl
import tempfile
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from expertline.bench.common import BenchOptions, BenchResult, percentile
from expertline.presence.ejabberd import EjabberdServer, ejabberd_available
from expertline.presence.mapping import StatusMap
from expertline.presence.prosody import ProsodyServer, prosody_available
from expertline.presence.protocol import MessageSet
from expertline.presence.xmpp import XmppSettings, XmppSource
from expertline.routing.model import ExpertSpec, OnMaxWait, QueueSpec, RoutingConfig
from expertline.runtime.ports import TaskRequest

OFFER = re.compile(r"^Offer #(\w+):")
PASSWORD = "bench-pw"


# -- the expert clients' process -----------------------------------------------------------


def _clients_main(conn: Connection, host: str, port: int, domain: str, count: int) -> None:
    logging.disable(logging.CRITICAL)
    asyncio.run(_clients(conn, host, port, domain, count))


class _NoTlsContext(ssl.SSLContext):
    """The bench clients speak plain XMPP on loopback; loading the system CA store for each
    of a thousand clients (slixmpp does, ~0.3 s each) would measure nothing useful."""

    def set_default_verify_paths(self) -> None:
        return None

    def load_default_certs(self, purpose: Any = None) -> None:
        return None


async def _clients(conn: Connection, host: str, port: int, domain: str, count: int) -> None:
    shared = _NoTlsContext(ssl.PROTOCOL_TLS_CLIENT)
    ssl.create_default_context = lambda *a, **k: shared  # this process only: the clients'
    from slixmpp import JID, ClientXMPP

    loop = asyncio.get_running_loop()
    arrivals: dict[str, float] = {}
    echo_at: list[float] = []
    clients: list[ClientXMPP] = []

    def make(user: str) -> ClientXMPP:
        client = ClientXMPP(
            f"{user}@{domain}/bench",
            PASSWORD,
            # PLAIN on loopback: SCRAM's 10,000 PBKDF2 rounds per login would make signing a
            # thousand experts in a benchmark about password hashing.
            plugin_config={"feature_mechanisms": {"unencrypted_plain": True, "use_mech": "PLAIN"}},
        )
        client.enable_direct_tls = False
        client.enable_starttls = False
        client.enable_plaintext = True
        client.auto_authorize = True
        client.auto_subscribe = False
        return client

    async def sign_in(client: ClientXMPP, presence: bool) -> None:
        started: asyncio.Future[None] = loop.create_future()

        async def on_start(_: object) -> None:
            await client.get_roster(timeout=30)
            if presence:
                client.send_presence()
            if not started.done():
                started.set_result(None)

        client.add_event_handler("session_start", on_start)
        client.connect(host, port)
        await asyncio.wait_for(started, 60)

    def on_offer(msg: Any) -> None:
        body = str(msg["body"])
        match = OFFER.match(body)
        if match is not None and match.group(1) not in arrivals:
            arrivals[match.group(1)] = time.monotonic()

    async def command(name: str, arg: Any) -> Any:
        if name == "sign_in":
            gate = asyncio.Semaphore(50)

            async def one(i: int) -> None:
                async with gate:
                    client = make(f"expert{i:04d}")
                    client.add_event_handler("message", on_offer)
                    clients.append(client)
                    await sign_in(client, presence=True)

            await asyncio.gather(*(one(i) for i in range(count)))
            return len(clients)
        if name == "unavailable":
            for client in clients:
                client.send_presence(ptype="unavailable")
            return True
        if name == "storm":
            at = time.monotonic()
            for client in clients:
                client.send_presence()
            while any(not c.waiting_queue.empty() for c in clients):
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)  # let the last writes reach the sockets
            return at, time.monotonic()
        if name == "arrivals":
            return dict(arrivals)
        if name == "echo":
            # Two extra clients: a pinger and an echoer, through the same server.
            rounds: int = arg
            a, b = make("echo-a"), make("echo-b")
            got: asyncio.Queue[float] = asyncio.Queue()

            def echo(msg: Any) -> None:
                if msg["body"]:
                    b.send_message(mto=msg["from"], mbody=msg["body"], mtype="chat")

            def back(msg: Any) -> None:
                if msg["body"]:
                    got.put_nowait(time.monotonic())

            b.add_event_handler("message", echo)
            a.add_event_handler("message", back)
            await sign_in(a, presence=True)
            await sign_in(b, presence=True)
            rtts: list[float] = []
            for i in range(rounds):
                sent = time.monotonic()
                a.send_message(mto=JID(f"echo-b@{domain}/bench"), mbody=f"ping {i}", mtype="chat")
                arrived = await asyncio.wait_for(got.get(), 10)
                rtts.append(arrived - sent)
            for c in (a, b):
                c.disconnect()
            echo_at.extend(rtts)
            return rtts
        if name == "stop":
            for client in clients:
                with contextlib.suppress(Exception):
                    client.disconnect(wait=0)
            return True
        raise ValueError(name)

    while True:
        name, arg = await loop.run_in_executor(None, conn.recv)
        try:
            result = await command(name, arg)
            conn.send(("ok", result))
        except Exception as exc:  # reported to the parent, which stops the run
            conn.send(("error", repr(exc)))
        if name == "stop":
            return


class _Clients:
    """The parent's handle on the clients' process."""

    def __init__(self, server: ProsodyServer | EjabberdServer, count: int) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_clients_main,
            args=(child, "127.0.0.1", server.c2s_port, server.domain, count),
            daemon=True,
        )
        self._proc.start()

    async def call(self, name: str, arg: Any = None, timeout: float = 180.0) -> Any:
        loop = asyncio.get_running_loop()
        self._conn.send((name, arg))
        if not await loop.run_in_executor(None, self._conn.poll, timeout):
            raise TimeoutError(f"expert clients did not answer {name!r} within {timeout}s")
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"expert clients failed on {name}: {value}")
        return value

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.call("stop", timeout=20)
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


# -- the router side -----------------------------------------------------------------------


class _Directory:
    def __init__(self, experts: Sequence[ExpertSpec]) -> None:
        self._experts = list(experts)

    def experts(self, source_id: str) -> Sequence[ExpertSpec]:
        return self._experts

    def messages(self, locale: str) -> MessageSet:
        return MessageSet.build(locale)

    def show_rules(self, queue_id: str) -> Mapping[str, str]:
        return {}

    def version(self) -> int:
        return 1


def _config(count: int, domain: str) -> RoutingConfig:
    experts = {
        f"expert{i:04d}": ExpertSpec(
            id=f"expert{i:04d}",
            name=f"Expert {i}",
            phone=f"sip:{2000 + i}@pbx.example.test",
            im=f"expert{i:04d}@{domain}",
        )
        for i in range(count)
    }
    queue = QueueSpec(
        id="bench",
        name="Bench",
        offer_to=1,
        offer_timeout=120.0,
        max_wait=600.0,
        on_max_wait=OnMaxWait("reject"),
    )
    return RoutingConfig(
        version=1,
        experts=experts,
        queues={"bench": queue},
        matches={"bench": (frozenset(experts),)},
    )


ROUTER_UNSHAPED = {
    # The router's own account may not be held to the 3,000 bytes/s every client gets by
    # default (offers at 200/s are ~40 kB/s); docs/xmpp.md gives the same two settings.
    "acl": {"expertline_router": {"user": ["router@example.test"]}},
    "shaper_rules": {
        "c2s_shaper": [{"none": "admin"}, {"none": "expertline_router"}, {"normal": "all"}]
    },
}


def _server(kind: str, workdir: Path, count: int) -> ProsodyServer | EjabberdServer:
    users = [(f"expert{i:04d}", PASSWORD) for i in range(count)]
    users += [("echo-a", PASSWORD), ("echo-b", PASSWORD), ("router", PASSWORD)]
    if kind == "prosody":
        server = ProsodyServer(workdir / "prosody")
        server.write_accounts(users)
        # The router's roster is provisioned up front, as a shared roster would be in
        # production (the first-time subscription handshake is a one-off cost, not measured).
        server.write_subscriptions("router", [f"expert{i:04d}" for i in range(count)])
        server.start()
        return server
    ejabberd = EjabberdServer(workdir / "ejabberd", overrides=ROUTER_UNSHAPED)
    ejabberd.start()
    try:
        ejabberd.write_accounts(users)
        # Shared roster groups, as in production: the router and the experts see each other
        # (subscriptions pre-approved), the experts do not see one another.
        ejabberd.shared_roster_group("experts", [], display=["routers"])
        ejabberd.shared_roster_group("routers", [], display=["experts"])
        ejabberd.shared_roster_add("routers", ["router"])
        ejabberd.shared_roster_add(
            "experts", [f"expert{i:04d}" for i in range(count)] + ["echo-a", "echo-b"]
        )
    except BaseException:
        ejabberd.stop()
        raise
    return ejabberd


async def _run(options: BenchOptions, result: BenchResult, workdir: Path, kind: str) -> None:
    from expertline.db import migrate
    from expertline.db.engine import make_engine
    from expertline.runtime.service import RuntimeService

    count = max(10, round(1000 * options.scale))
    server = _server(kind, workdir, count)
    name = "Prosody" if kind == "prosody" else "ejabberd"
    engine = make_engine(options.db or f"sqlite:///{workdir / f'bench-{kind}.db'}")
    migrate.upgrade(engine)
    config = _config(count, server.domain)
    service = RuntimeService(
        engine,
        node="bench",
        config_loader=lambda _e: (config, None),
        version_probe=lambda _e: config.version,
    )
    settings = XmppSettings(
        id="bench",
        mode="account",
        jid=f"router@{server.domain}",
        secret=PASSWORD,
        host="127.0.0.1",
        port=server.c2s_port,
        status_map=StatusMap.parse(None),
        connect_timeout=120.0,
        ping_interval=60.0,
    )
    source = XmppSource(settings, service, _Directory(list(config.experts.values())))
    service.register_channel(source)
    clients = _Clients(server, count)
    backend = engine.url.get_backend_name()
    try:
        await service.async_start()
        await source.async_start()
        await _wait(lambda: source.up, 120, "the router did not sign in")

        # Raw floor.
        rtts = await clients.call("echo", 200)
        raw_p50, raw_p99 = percentile(rtts, 50) * 1000, percentile(rtts, 99) * 1000
        result.add("raw round trip p50", raw_p50, "ms", context=f"client→{name}→client→back")
        result.add("raw round trip p99", raw_p99, "ms", context="200 echoes")

        # Sign every expert in (subscriptions approved on the way), then take them offline.
        t0 = time.monotonic()
        await clients.call("sign_in", timeout=300)
        result.add("sign-in of all experts", time.monotonic() - t0, "s", context=f"{count} clients")

        def available() -> int:
            return sum(
                1
                for e in config.experts
                if (service.expert_state(e) or {}).get("presence") == "available"
            )

        await _wait(lambda: available() == count, 120, "experts did not all become available")
        await clients.call("unavailable")
        await _wait(lambda: available() == 0, 60, "experts did not all go offline")

        # Presence storm.
        before = source.presence_stanzas
        server_cpu = server.cpu_seconds()
        storm_at, flushed_at = await clients.call("storm")
        result.add("storm: clients done sending", flushed_at - storm_at, "s", context="1 process")
        await _wait(lambda: available() == count, 60, "storm: experts not all available")
        storm = time.monotonic() - storm_at
        result.add(
            f"storm: {name} CPU",
            server.cpu_seconds() - server_cpu,
            "s",
            context="user+system while the storm ran",
        )
        result.add(
            "storm: last stanza at the router",
            source.last_presence_at - storm_at,
            "s",
            context=f"{source.presence_stanzas - before} stanzas",
        )
        result.add("presence storm", storm, "s", target="<= 2", context=f"{count} experts at once")

        # Offer delivery at two rates.
        target = 3 * raw_p99 + 5
        for rate, seconds in ((50, 4.0), (200, 2.5)):
            n = min(int(rate * seconds * max(options.scale, 0.1)), available())
            created: dict[str, float] = {}
            interval = 1.0 / rate
            start = time.monotonic()
            for i in range(n):
                due = start + i * interval
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                at = time.monotonic()
                view = await service.async_create_task(TaskRequest(queue="bench", caller="+1555"))
                created[view.code] = at
            await asyncio.sleep(1.0)
            arrivals: dict[str, float] = await clients.call("arrivals")
            latencies = [(arrivals[c] - t) * 1000 for c, t in created.items() if c in arrivals]
            missing = len(created) - len(latencies)
            context = f"{n} tasks at {rate}/s, {backend}" + (
                f", {missing} not delivered within 1 s" if missing else ""
            )
            result.add(
                f"offer delivery p50 @{rate}/s", percentile(latencies, 50), "ms", context=context
            )
            result.add(
                f"offer delivery p99 @{rate}/s",
                percentile(latencies, 99),
                "ms",
                target=f"<= {target:.1f}",
                context="target = 3 x raw p99 + 5 ms",
            )
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        result.notes.append(
            f"{name}: clients run in a separate process; runtime, presence source and {name} "
            f"share the other cores; {os.cpu_count()} CPUs, load average at the end {load}"
        )
    finally:
        await clients.stop()
        await source.async_stop()
        await service.async_stop()
        engine.dispose()
        server.stop()


async def _wait(check: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        await asyncio.sleep(0.005)


SERVERS = {"prosody": prosody_available, "ejabberd": ejabberd_available}


def run(options: BenchOptions) -> BenchResult:
    unknown = sorted(options.only - set(SERVERS))
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)}; sections: prosody, ejabberd")
    kinds = [k for k in SERVERS if not options.only or k in options.only]
    for kind in kinds:
        if not SERVERS[kind]():
            raise SystemExit(f"error: bench xmpp needs {kind} (apt-get install {kind})")
    result = BenchResult("xmpp")
    logging.getLogger("expertline").setLevel(
        logging.WARNING if not options.extra.get("verbose") else logging.INFO
    )
    if options.extra.get("verbose"):
        logging.basicConfig(level=logging.INFO)
    for kind in kinds:
        first = len(result.measurements)
        with tempfile.TemporaryDirectory(prefix=f"expertline-bench-xmpp-{kind}-") as tmp:
            asyncio.run(_run(options, result, Path(tmp), kind))
        if kind != "prosody":  # Prosody's rows keep their names; the others say the server
            result.measurements[first:] = [
                dataclasses.replace(m, metric=f"{kind}: {m.metric}")
                for m in result.measurements[first:]
            ]
    return result
