"""Two real ``expertline serve`` runtime nodes on one PostgreSQL database, and traffic for them.

``Pair`` prepares the database (schema, ``TWO_QUEUES_YAML``, tokens) and starts nodes with the
default HA settings. ``Traffic`` plays a routing client (a task created every few
milliseconds) and experts (each takes the offers it sees: accept, connected, ended) against
whichever node answers, and keeps what was acknowledged, so a test can kill or pause a node or
the database under load and check every acknowledged task afterwards.
"""

from __future__ import annotations

import itertools
import threading
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import Engine, func, select

from expertline.db.engine import make_engine
from expertline.db.tables import rcd, routing_feed, runtime_tasks, tcd
from expertline.security.tokens import create_token
from support.processes import ServerProcess, cli, running_server
from support.runtime_client import EXPERTS, TWO_QUEUES_YAML, RuntimeClient


class Pair:
    """The database, its tokens, and a way to start runtime nodes on it."""

    def __init__(self, url: str, tmp: Path, stack: ExitStack) -> None:
        self.url, self.tmp, self.stack = url, tmp, stack
        cli("--db", url, "db", "upgrade", check=True)
        (tmp / "config.yaml").write_text(TWO_QUEUES_YAML)
        cli("--db", url, "config", "import", str(tmp / "config.yaml"), check=True)
        self.engine: Engine = make_engine(url)
        stack.callback(self.engine.dispose)
        self.tokens = (
            create_token(self.engine, "cc", "routing-client"),
            create_token(self.engine, "integration", "admin"),  # acts for every expert
        )

    def node(self, name: str, ttl: float | None = None) -> ServerProcess:
        """A runtime node with the default HA settings (or another lease time)."""
        env = {"EXPERTLINE_DB": self.url}
        if ttl is not None:
            env["EXPERTLINE_HA_LEASE_TTL"] = str(ttl)
        args = ("--role", "runtime", "--node", name)
        return self.stack.enter_context(running_server(self.tmp, *args, env=env))

    def client(self, node: ServerProcess) -> RuntimeClient:
        return RuntimeClient(node.base_url, *self.tokens)

    def _per_task(self, table: object, where: object = None) -> dict[str, int]:
        column = table.c.task_id  # type: ignore[attr-defined]
        query = select(column, func.count()).group_by(column)
        if where is not None:
            query = query.where(where)  # type: ignore[arg-type]
        with self.engine.connect() as conn:
            return {task_id: n for task_id, n in conn.execute(query)}

    def tcd_counts(self) -> dict[str, int]:
        return self._per_task(tcd)

    def rcd_counts(self) -> dict[str, int]:
        return self._per_task(rcd)

    def assigned_counts(self) -> dict[str, int]:
        """``task.assigned`` events per task (an expert got it)."""
        return self._per_task(routing_feed, routing_feed.c.type == "task.assigned")

    def task_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(runtime_tasks.c.task_id)).scalars())


def ready(node: ServerProcess) -> bool:
    try:
        return httpx.get(node.base_url + "/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def state(node: ServerProcess, pair: Pair) -> str:
    client = pair.client(node)
    return str(client.http.get("/api/v1/status", headers=client.rc).json()["state"])


@dataclass
class Traffic:
    """A routing client and experts working against whichever node of ``nodes`` answers
    (a node appended to ``nodes`` later, e.g. restarted on another port, is used too).

    With ``retry``, the routing client asks again for a task no node acknowledged (same
    ``external_id``, as a SIP proxy honouring ``Retry-After`` would) until ``give_up``
    seconds have passed; ``dropped`` counts the tasks given up."""

    pair: Pair
    nodes: list[ServerProcess]
    queue: str = "billing"
    experts: tuple[str, ...] = ()  # experts that take offers (available from the start)
    pace: float = 0.02  # seconds between task creations
    timeout: float = 10.0  # a request unanswered this long counts as not acknowledged
    retry: bool = False
    give_up: float = 10.0
    # task id -> (request sent, acknowledged, node url), times from time.monotonic(); with
    # retries, "sent" is the attempt that was acknowledged
    acked: dict[str, tuple[float, float, str]] = field(default_factory=dict)
    refused: int = 0
    dropped: int = 0
    accepted: dict[str, list[str]] = field(default_factory=dict)  # task id -> experts
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    def __enter__(self) -> Traffic:
        self._threads = [threading.Thread(target=self._create, daemon=True)]
        self._threads += [
            threading.Thread(target=self._expert, args=(e,), daemon=True) for e in self.experts
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2 * self.timeout + self.give_up)

    def acked_after(self, instant: float) -> list[tuple[float, float, str]]:
        """(sent, acknowledged, node) of the tasks asked for after ``instant`` and
        acknowledged, in order."""
        return sorted(v for v in self.acked.values() if v[0] > instant)

    def _order(self, cache: dict[str, httpx.Client], preferred: str) -> list[httpx.Client]:
        """The nodes' clients, the one that answered last first (a paused node costs one
        timeout, not one per request)."""
        urls = sorted((n.base_url for n in list(self.nodes)), key=lambda u: u != preferred)
        return [
            cache.get(u) or cache.setdefault(u, httpx.Client(base_url=u, timeout=self.timeout))
            for u in urls
        ]

    def _create(self) -> None:
        rc = {"Authorization": f"Bearer {self.pair.tokens[0]}"}
        cache: dict[str, httpx.Client] = {}
        preferred = ""
        while not self._stop.wait(self.pace):
            body = {"queue": self.queue, "external_id": f"load-{next(self._serial)}"}
            first = time.monotonic()
            while True:
                sent = time.monotonic()
                answered = self._ask(self._order(cache, preferred), body, rc)
                if answered is not None:
                    task, preferred = answered
                    self.acked[task] = (sent, time.monotonic(), preferred)
                    break
                if not self.retry or self._stop.is_set():
                    break
                if time.monotonic() - first > self.give_up:
                    self.dropped += 1
                    break
                time.sleep(0.05)

    def _ask(
        self, clients: list[httpx.Client], body: dict[str, str], rc: dict[str, str]
    ) -> tuple[str, str] | None:
        """(task id, node url) from the first node that acknowledges the task, or None."""
        for http in clients:
            try:
                r = http.post("/api/v1/tasks", json=body, headers=rc)
            except httpx.HTTPError:
                continue
            if r.status_code in (200, 201):  # 200: an earlier attempt created it
                return str(r.json()["id"]), str(http.base_url).rstrip("/")
            self.refused += 1
        return None

    def _expert(self, expert: str) -> None:
        """Take every offer: accept, then the call connects and ends (the expert is free)."""
        ex = {"Authorization": f"Bearer {self.pair.tokens[1]}"}
        rc = {"Authorization": f"Bearer {self.pair.tokens[0]}"}
        cache: dict[str, httpx.Client] = {}
        preferred = ""
        for http in self._order(cache, preferred):  # whichever node is active takes it
            with suppress(httpx.HTTPError):
                http.put(
                    f"/api/v1/experts/{expert}/presence", json={"status": "available"}, headers=ex
                )
        while not self._stop.wait(0.01):
            for http in self._order(cache, preferred):
                try:
                    offers = http.get(f"/api/v1/offers?expert={expert}", headers=ex)
                    if offers.status_code != 200:
                        continue
                    preferred = str(http.base_url).rstrip("/")
                    for offer in offers.json()["items"]:
                        r = http.post(f"/api/v1/offers/{offer['id']}/accept", headers=ex)
                        if r.status_code != 200:
                            continue
                        task = offer["task_id"]
                        self.accepted.setdefault(task, []).append(expert)
                        for event in ("connected", "ended"):
                            http.post(
                                f"/api/v1/tasks/{task}/events", json={"type": event}, headers=rc
                            )
                except httpx.HTTPError:
                    continue
                break


__all__ = ["EXPERTS", "Pair", "Traffic", "ready", "state"]
