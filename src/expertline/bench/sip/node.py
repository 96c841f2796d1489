"""The node under test: the routing runtime and the SIP front in a process of their own, as a
node runs them.

With experts, a durable runtime (temporary SQLite, or ``--bench-db``) serves one queue whose
experts may not decline, so every task is assigned as it is created (no IM round trip). With
no experts, the front runs alone over ``InstantPort``: the SIP layer's own ceiling. The parent
talks to the process over a pipe: it reads the front's port, later sends "stop" and reads the
front's counters back.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from expertline.loops import loop_factory
from expertline.routing.model import Presence

ENTRY = "+18005550100"  # the number the callers dial: the bench queue's entry point
DEFAULT_PHONE = "127.0.0.1:5999"  # redirect mode: nobody is called there
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class NodeProcess:
    """One node under test. ``experts=0``: the front alone; ``phone`` (host:port of a sipp
    phone): proxy mode, the experts' phones being that phone; otherwise redirect mode."""

    def __init__(
        self,
        workdir: Path,
        db: str | None,
        experts: int,
        label: str,
        phone: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.db = db
        self.experts = experts
        self.label = label
        self.phone = phone
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None

    @property
    def mode(self) -> str:
        return "redirect" if self.phone is None else "proxy"

    def start(self) -> str:
        """Start the process; returns the front's address (host:port) once it listens."""
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        phone = self.phone or DEFAULT_PHONE
        self.process = ctx.Process(
            target=_node_main,
            args=(child, self.db, str(self.workdir), self.experts, self.mode, phone),
            name=f"bench-{self.label}",
        )
        self.process.start()
        if not self.conn.poll(START_TIMEOUT):
            raise RuntimeError(f"the node under test did not start within {START_TIMEOUT:g} s")
        return f"127.0.0.1:{self.conn.recv()}"

    def stop(self) -> dict[str, Any]:
        """Stop the process; returns the front's counters ({} when it did not answer)."""
        stats: dict[str, Any] = {}
        if self.process is None or self.conn is None:
            return stats
        self.conn.send("stop")
        if self.conn.poll(STOP_TIMEOUT):
            stats = self.conn.recv()
        self.process.join(STOP_TIMEOUT)
        if self.process.is_alive():
            self.process.kill()
        return stats


def _node_main(
    conn: Connection,
    db_url: str | None,
    data_dir: str,
    experts: int,
    mode: str = "redirect",
    phone: str = DEFAULT_PHONE,
) -> None:
    logging.basicConfig(level=logging.WARNING)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:  # the loop a node runs on
        if experts == 0:
            runner.run(_front_only(conn, mode, phone))
        else:
            runner.run(_node(conn, db_url, data_dir, experts, mode, phone))


class InstantPort:
    """A task port that assigns every task at once, in memory: the SIP layer's own ceiling."""

    def __init__(self, phone: str = DEFAULT_PHONE) -> None:
        from expertline.routing.model import RoutingConfig

        self.phone = phone
        self.count = 0
        self.config = RoutingConfig(version=0, experts={}, queues={}, matches={})

    async def async_create_task(self, request: Any) -> Any:
        from expertline.runtime.ports import TaskView

        self.count += 1
        return TaskView(
            str(self.count), "0", "assigned", "bench", "e0", f"sip:1000@{self.phone}", ""
        )

    async def async_create_task_ex(self, request: Any) -> tuple[Any, bool]:
        return await self.async_create_task(request), True

    async def async_task_event(
        self, task_id: str, type: str, disposition: Any = None, handed_off: bool = False
    ) -> Any:
        return None

    def queue(self, queue_id: str) -> Any:
        return None


async def _front_only(conn: Connection, mode: str, phone: str) -> None:
    from expertline.sip.front import SipFront
    from expertline.sip.trust import OutboundTargets

    port = InstantPort(phone)
    targets = OutboundTargets(("127.0.0.1",), config=lambda: port.config)  # the sipp phone
    front = SipFront(port, "127.0.0.1", 0, mode=mode, targets=targets)  # type: ignore[arg-type]
    await _serve(conn, front, [])


async def _serve(conn: Connection, front: Any, services: list[Any]) -> None:
    """Start the front, send its port, wait for "stop", stop, send the front's counters."""
    await front.async_start()
    conn.send(front.sip_port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(conn.fileno(), stop.set)
    await stop.wait()
    loop.remove_reader(conn.fileno())
    stats = dict(front.stats)
    await front.async_stop()
    for service in services:
        await service.async_stop()
    conn.recv()
    conn.send(stats)


async def _node(
    conn: Connection, db_url: str | None, data_dir: str, experts: int, mode: str, phone: str
) -> None:
    from expertline.db import migrate
    from expertline.db.engine import make_engine
    from expertline.routing.model import ExpertSpec, OnMaxWait, QueueSpec, RoutingConfig
    from expertline.runtime.service import RuntimeService
    from expertline.settings import normalize_db_url
    from expertline.sip.front import SipFront

    url = normalize_db_url(db_url) if db_url else f"sqlite:///{data_dir}/bench-sip.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    specs = {
        f"e{i}": ExpertSpec(
            id=f"e{i}",
            name=f"Expert {i}",
            phone=f"sip:{1000 + i}@{phone}",
            may_decline=False,
            max_tasks=10,
        )
        for i in range(experts)
    }
    queue = QueueSpec(
        id="bench", name="Bench", offer_to=1, max_wait=30.0, on_max_wait=OnMaxWait("reject")
    )
    config = RoutingConfig(
        version=1,
        experts=specs,
        queues={"bench": queue},
        matches={"bench": (frozenset(specs),)},
        entry_points={ENTRY: "bench"},
    )
    service = RuntimeService(
        engine,
        node="bench",
        config_loader=lambda _e: (config, None),
        version_probe=lambda _e: 1,
    )
    await service.async_start()
    for expert_id in specs:
        await service.async_set_presence(expert_id, Presence.AVAILABLE, "bench")
    front = SipFront(service, "127.0.0.1", 0, mode=mode)  # type: ignore[arg-type]
    await _serve(conn, front, [service])
    engine.dispose()
