"""``expertline bench ha``: how long routing stops when the active node of a pair goes away.

Needs PostgreSQL (``--bench-db postgresql://...``; an HA pair shares one): the benchmark
migrates that database, imports a one-queue configuration and leaves its tasks there. Two
``expertline serve --role runtime`` processes run on it, as two nodes would. Each round:

1. node A starts (active), node B starts (standby), 50 tasks are created on A and wait;
2. A is killed with SIGKILL: the time until B answers ``/readyz`` with 200, and how many of
   the 50 tasks B then shows;
3. A starts again (now the standby) and B is stopped with SIGTERM: the time until A answers.

Sections: ``ttl10`` (the default lease of 10 s) and ``ttl2`` (``EXPERTLINE_HA_LEASE_TTL=2``),
both with the default standby poll of 1 s. ``--scale`` sets the rounds (3 at 1.0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from expertline.bench.common import BenchOptions, BenchResult, percentile
from expertline.db import migrate
from expertline.db.engine import is_sqlite, make_engine
from expertline.net import free_port

TASKS = 50
SECTIONS = {"ttl10": 10.0, "ttl2": 2.0}
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
    def __init__(self, url: str, workdir: Path, ttl: float) -> None:
        self.url, self.workdir, self.ttl = url, workdir, ttl
        self.nodes: list[Node] = []

    def start(self, name: str) -> Node:
        port = free_port()
        env = {
            **os.environ,
            "EXPERTLINE_DB": self.url,
            "EXPERTLINE_HA_LEASE_TTL": str(self.ttl),
            "EXPERTLINE_DATA_DIR": str(self.workdir),
        }
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


def _round(pair: Pair, headers: dict[str, str]) -> tuple[float, int, float]:
    """One round: (kill -9 -> standby ready s, tasks it shows, SIGTERM -> other ready s)."""
    a = pair.start("a")
    _wait(a.ready, 60, "node a active")
    b = pair.start("b")
    ids = []
    with httpx.Client(base_url=a.url, headers=headers, timeout=30) as client:
        for _ in range(TASKS):
            r = client.post("/api/v1/tasks", json={"queue": "billing"})
            r.raise_for_status()
            ids.append(r.json()["id"])
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=10)
    killed = _wait(b.ready, 10 * pair.ttl + 30, "takeover after kill -9")
    with httpx.Client(base_url=b.url, headers=headers, timeout=30) as client:
        shown = sum(client.get(f"/api/v1/tasks/{tid}").status_code == 200 for tid in ids)
    a = pair.start("a")
    b.stop(signal.SIGTERM)
    handed = _wait(a.ready, 10 * pair.ttl + 30, "takeover after SIGTERM")
    a.stop(signal.SIGTERM)
    return killed, shown, handed


def run(options: BenchOptions) -> BenchResult:
    if options.db is None or is_sqlite(options.db):
        raise ValueError(
            "bench ha needs --bench-db with a PostgreSQL URL: an HA pair shares a PostgreSQL "
            "database"
        )
    options.check_sections(list(SECTIONS))
    from expertline.settings import normalize_db_url

    url = normalize_db_url(options.db)
    headers = _prepare(url)
    rounds = max(1, round(3 * options.scale))
    result = BenchResult("ha")
    for key, ttl in SECTIONS.items():
        if not options.selected(key):
            continue
        figures: list[tuple[float, int, float]] = []
        with tempfile.TemporaryDirectory() as tmp:
            pair = Pair(url, Path(tmp), ttl)
            try:
                for _ in range(rounds):
                    figures.append(_round(pair, headers))
            finally:
                pair.stop_all()
        _add(result, ttl, rounds, figures)
    return result


def _add(
    result: BenchResult, ttl: float, rounds: int, figures: list[tuple[float, int, float]]
) -> None:
    ctx = f"lease {ttl:g} s, poll 1 s, {TASKS} tasks waiting, {rounds} rounds, PostgreSQL"
    killed = [f[0] for f in figures]
    handed = [f[2] for f in figures]
    stats: dict[str, Any] = {
        f"kill -9 -> standby ready p50 (lease {ttl:g} s)": percentile(killed, 50),
        f"kill -9 -> standby ready max (lease {ttl:g} s)": max(killed),
        f"SIGTERM -> other ready p50 (lease {ttl:g} s)": percentile(handed, 50),
    }
    for metric, value in stats.items():
        result.add(metric, value, "s", None, ctx)
    result.add(
        f"tasks shown by the new active node (lease {ttl:g} s)",
        min(f[1] for f in figures),
        "tasks",
        f">= {TASKS}",
        ctx,
    )
