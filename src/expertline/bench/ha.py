"""``expertline bench ha``: how long routing stops when a node of the pair, or the database's
primary, goes away, and whether any acknowledged task is lost.

Two ``expertline serve --role runtime`` processes run as the two nodes would, with the HA
settings of the environment (the defaults unless ``EXPERTLINE_HA_*`` say otherwise; the
figures name them). A routing client creates a task every 20 ms against whichever node
answers; "routing again" is the first task asked for *after* the event that the pair
acknowledges (201).

Sections:

- ``runtime`` (needs ``--bench-db postgresql://...``; the benchmark migrates that database,
  imports a one-queue configuration and leaves its tasks there). Each round: kill -9 of the
  active node, seconds until the other routes; then the killed node starts again (now the
  standby) and the active one gets SIGTERM, seconds until the other routes. 5 rounds at
  ``--scale 1``.
- ``database`` (needs the PostgreSQL server binaries, ``initdb`` and ``pg_ctl``; the database
  is made by the benchmark, ``db/replicated.py``): a primary and a synchronous streaming
  replica, the nodes on the multi-host URL. Each round: kill -9 of the primary and every
  process of it, the replica promoted at once (``pg_ctl promote``, as a failover manager
  would once it decided), seconds until the pair routes again. 3 rounds at ``--scale 1``.

In both, every task acknowledged must be in the database afterwards: "acknowledged tasks
lost" must be 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import select

from expertline.bench.common import BenchOptions, BenchResult, percentile
from expertline.db import migrate
from expertline.db.engine import is_sqlite, make_engine
from expertline.db.tables import runtime_tasks
from expertline.ha.decide import LeaseTimes
from expertline.net import free_port

SECTIONS = ("runtime", "database")
PACE = 0.02  # seconds between two task creations
WARM = 20  # tasks acknowledged before each event
CONFIG = """
attributes:
  - {name: billing, type: proficiency}
experts:
  - {id: alice, name: Alice, im: alice@example.test, phone: "sip:1001@pbx.example.test",
     attributes: {billing: 80}}
queues:
  - {id: billing, name: Billing, select: "billing >= 50", max_wait: 1h}
"""


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[bytes]
    url: str

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` holds, polled every 10 ms; fails after ``timeout``."""
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.01)
    return time.perf_counter() - started


class Pair:
    def __init__(self, url: str, workdir: Path) -> None:
        self.url, self.workdir = url, workdir
        self.nodes: list[Node] = []

    def start(self, name: str) -> Node:
        port = free_port()
        env = {**os.environ, "EXPERTLINE_DB": self.url, "EXPERTLINE_DATA_DIR": str(self.workdir)}
        command = [sys.executable, "-m", "expertline", "serve", "--role", "runtime"]
        command += ["--node", name, "--http", f"127.0.0.1:{port}", "--no-presence"]
        with open(self.workdir / f"{name}-{port}.log", "wb") as log:  # the child keeps it open
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        node = Node(name, proc, f"http://127.0.0.1:{port}")
        self.nodes.append(node)

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"node {name} exited with {proc.returncode}")
            try:
                return httpx.get(node.url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(answers, 60, f"node {name} answering")
        return node

    def stop_all(self) -> None:
        for node in self.nodes:
            node.stop(signal.SIGTERM)


@dataclass
class Load:
    """A routing client: a task every ``PACE`` seconds, to whichever node answers first."""

    nodes: list[Node]
    headers: dict[str, str]
    # (sent, acknowledged, task id, node url), times from time.perf_counter()
    acked: list[tuple[float, float, str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        clients: dict[str, httpx.Client] = {}
        preferred = ""
        while not self._stop.wait(PACE):
            sent = time.perf_counter()
            urls = sorted((n.url for n in self.nodes), key=lambda url: url != preferred)
            for url in urls:
                client = clients.get(url) or clients.setdefault(
                    url, httpx.Client(base_url=url, headers=self.headers, timeout=10)
                )
                try:
                    r = client.post("/api/v1/tasks", json={"queue": "billing"})
                except httpx.HTTPError:
                    continue
                if r.status_code == 201:
                    self.acked.append((sent, time.perf_counter(), r.json()["id"], url))
                    preferred = url  # it answered: ask it first
                    break
        for client in clients.values():
            client.close()

    def routing_after(self, instant: float, by: Node | None = None, timeout: float = 120) -> float:
        """Seconds from ``instant`` until a task asked for after it is acknowledged (by the
        node ``by``, if given)."""

        def after() -> list[float]:
            return [
                acked
                for sent, acked, _, url in self.acked
                if sent > instant and (by is None or url == by.url)
            ]

        _wait(lambda: bool(after()), timeout, "routing again")
        return min(after()) - instant

    def warm(self, count: int = WARM) -> None:
        already = len(self.acked)
        _wait(lambda: len(self.acked) >= already + count, 120, "tasks acknowledged")


@contextmanager
def running_load(nodes: list[Node], headers: dict[str, str]) -> Iterator[Load]:
    load = Load(nodes, headers)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    try:
        yield load
    finally:
        load._stop.set()
        thread.join(timeout=30)


def _prepare(url: str) -> dict[str, str]:
    """Migrate, import the configuration; the routing client's headers."""
    from expertline.config.store import apply_document
    from expertline.config.validate import load_yaml
    from expertline.security.tokens import create_token

    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        apply_document(engine, load_yaml(CONFIG), "bench:ha")
        return {"Authorization": f"Bearer {create_token(engine, 'bench-ha', 'routing-client')}"}
    finally:
        engine.dispose()


def _lost(url: str, load: Load) -> int:
    """Acknowledged tasks the database does not have."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            stored = set(conn.execute(select(runtime_tasks.c.task_id)).scalars())
    finally:
        engine.dispose()
    return len({task for _, _, task, _ in load.acked} - stored)


def _runtime_round(pair: Pair, headers: dict[str, str]) -> tuple[float, float, Load]:
    """(kill -9 -> the other routes s, SIGTERM -> the other routes s, the load)."""
    a = pair.start("a")
    _wait(a.ready, 60, "node a active")
    b = pair.start("b")
    with running_load([a, b], headers) as load:
        load.warm()
        killed_at = time.perf_counter()
        a.proc.send_signal(signal.SIGKILL)
        killed = load.routing_after(killed_at, by=b)
        a.proc.wait(timeout=10)
        a = pair.start("a")  # back, as the standby, on another port
        load.nodes.append(a)
        load.warm()
        stopped_at = time.perf_counter()
        stopping = threading.Thread(target=b.stop, args=(signal.SIGTERM,))
        stopping.start()
        handed = load.routing_after(stopped_at, by=a)  # (b may answer until its HTTP stops)
        stopping.join()
        load.warm(5)
    a.stop(signal.SIGTERM)
    return killed, handed, load


def _database_round(workdir: Path) -> tuple[float, int]:
    """(primary killed -> routing again s, acknowledged tasks lost)."""
    from expertline.db.replicated import replicated_postgres
    from expertline.settings import normalize_db_url

    with replicated_postgres() as cluster:
        url = normalize_db_url(cluster.url)
        headers = _prepare(url)
        pair = Pair(url, workdir)
        try:
            a = pair.start("a")
            _wait(a.ready, 60, "node a active")
            b = pair.start("b")
            with running_load([a, b], headers) as load:
                load.warm()
                killed_at = time.perf_counter()
                cluster.kill_primary()
                cluster.promote_replica()
                interruption = load.routing_after(killed_at)
                load.warm()
            return interruption, _lost(url, load)
        finally:
            pair.stop_all()


def run(options: BenchOptions) -> BenchResult:
    options.check_sections(list(SECTIONS))
    times = _lease_times()
    settings = (
        f"ha_lease_ttl={times.ttl:g} ha_renew={times.renew:g} "
        f"ha_retry_timeout={times.retry_timeout:g} ha_poll={times.poll:g} (s), step-down "
        f"margin {times.margin:g} s"
    )
    result = BenchResult("ha")
    result.notes.append(f"settings: {settings}")
    if options.selected("runtime"):
        _runtime_section(options, result, settings)
    if options.selected("database"):
        _database_section(options, result, settings)
    return result


def _lease_times() -> LeaseTimes:
    from expertline.settings import load_settings

    return load_settings().lease_times()


def _runtime_section(options: BenchOptions, result: BenchResult, settings: str) -> None:
    if options.db is None or is_sqlite(options.db):
        raise ValueError(
            "bench ha needs --bench-db with a PostgreSQL URL: an HA pair shares a PostgreSQL "
            "database (or --only database, which makes its own)"
        )
    from expertline.settings import normalize_db_url

    url = normalize_db_url(options.db)
    headers = _prepare(url)
    rounds = max(1, round(5 * options.scale))
    killed, handed, lost = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        pair = Pair(url, Path(tmp))
        try:
            for _ in range(rounds):
                k, h, load = _runtime_round(pair, headers)
                killed.append(k)
                handed.append(h)
                lost += _lost(url, load)
        finally:
            pair.stop_all()
    ctx = f"{settings}; {rounds} rounds, a task every {PACE * 1000:g} ms, PostgreSQL"
    result.add(
        "kill -9 of the active node -> routing again p50", percentile(killed, 50), "s", None, ctx
    )
    result.add("kill -9 of the active node -> routing again max", max(killed), "s", "<= 3", ctx)
    result.add(
        "SIGTERM of the active node -> the other routes p50", percentile(handed, 50), "s", None, ctx
    )
    result.add("acknowledged tasks lost (runtime failovers)", lost, "tasks", "<= 0", ctx)


def _database_section(options: BenchOptions, result: BenchResult, settings: str) -> None:
    from expertline.db.replicated import servers_available

    if not servers_available():
        raise ValueError(
            "bench ha's database section needs the PostgreSQL server binaries (initdb, "
            "pg_ctl, pg_basebackup; EXPERTLINE_PG_BIN names their directory)"
        )
    rounds = max(1, round(3 * options.scale))
    interruptions, lost = [], 0
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, missing = _database_round(Path(tmp))
        interruptions.append(seconds)
        lost += missing
    ctx = (
        f"{settings}; {rounds} rounds, primary + synchronous replica on loopback, promoted "
        "at once after kill -9 of the primary"
    )
    result.add(
        "primary killed -> routing again p50 (promotion included)",
        percentile(interruptions, 50),
        "s",
        None,
        ctx,
    )
    result.add(
        "primary killed -> routing again max (promotion included)",
        max(interruptions),
        "s",
        None,
        ctx,
    )
    result.add("acknowledged tasks lost (database promotions)", lost, "tasks", "<= 0", ctx)
