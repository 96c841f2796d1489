"""The nodes serving pages: where each is, whether it is active, and how its links are.

Each node's ``NodeBeacon`` (a node service) writes one ``web_nodes`` row every few seconds: its
name, the URL people reach its pages at (``public_url``, by default ``http://<http>``), its
role, whether it is the active node, and its components' health (database, lease, presence
links, SIP). Every node's pages read these rows: the dashboard shows each node, and a standby's
pages say which node is active and link to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from expertline.db.engine import as_utc
from expertline.db.tables import web_nodes
from expertline.web.app import AppContext

log = logging.getLogger(__name__)

BEAT = 3.0  # seconds between two rows of one node
WATCH = 0.25  # seconds between two looks at whether this node became active or standby
STALE = timedelta(seconds=15)  # a row older than this: the node is gone or cut off
_READ_CACHE = 1.0  # pages of one node read the rows at most this often


@dataclass(frozen=True)
class NodeInfo:
    node: str
    url: str
    role: str
    active: bool
    components: list[dict[str, Any]]
    seen_at: datetime
    fresh: bool
    here: bool


def own_url(ctx: AppContext) -> str:
    public = ctx.settings.public_url
    if public:
        return str(public).rstrip("/")
    return f"http://{ctx.settings.http}"


def snapshot(ctx: AppContext) -> dict[str, Any]:
    """This node's row as it is now."""
    health = ctx.services.health
    components = [
        {"name": c.name, "up": c.up, "detail": c.detail[:200], "required": c.required}
        for c in health.components()
    ]
    return {
        "node": ctx.settings.node,
        "url": own_url(ctx),
        "role": ctx.settings.role,
        "active": health.active,
        "components": components,
    }


def write_beat(engine: Engine, row: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        done = conn.execute(
            update(web_nodes).where(web_nodes.c.node == row["node"]).values(**row, seen_at=now)
        )
        if not done.rowcount:
            conn.execute(insert(web_nodes).values(**row, seen_at=now))


class NodeBeacon:
    """A node service: keeps this node's ``web_nodes`` row fresh while the node runs."""

    def __init__(self, ctx: AppContext, every: float = BEAT) -> None:
        self.ctx = ctx
        self.every = every
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._written_active: bool | None = None

    async def async_start(self) -> None:
        await self._beat()
        self._task = asyncio.create_task(self._loop(), name="web-node-beacon")

    async def async_stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._forget)

    def _forget(self) -> None:
        with self.ctx.engine.begin() as conn:
            conn.execute(delete(web_nodes).where(web_nodes.c.node == self.ctx.settings.node))

    async def _loop(self) -> None:
        """A row every ``every`` seconds, and at once when this node becomes active or standby
        (so a standby's pages name the new active node without waiting for the next beat)."""
        since = time.monotonic()
        while True:
            await asyncio.sleep(min(WATCH, self.every))
            changed = snapshot(self.ctx)["active"] != self._written_active
            if changed or time.monotonic() - since >= self.every:
                await self._beat()
                since = time.monotonic()

    async def _beat(self) -> None:
        row = snapshot(self.ctx)
        try:
            await asyncio.to_thread(write_beat, self.ctx.engine, row)
        except Exception as exc:  # the pages say what they can; routing goes on
            if not self._failing:
                log.warning("node row not written node=%s error=%r", self.ctx.settings.node, exc)
            self._failing = True
        else:
            if self._failing:
                log.info("node row written again node=%s", self.ctx.settings.node)
            self._failing = False
            self._written_active = row["active"]


def create_node_beacon(ctx: AppContext) -> NodeBeacon:
    return NodeBeacon(ctx)


_cache: dict[int, tuple[float, list[NodeInfo]]] = {}


def known_nodes(ctx: AppContext) -> list[NodeInfo]:
    """Every node seen lately, this one first (from its own live state, not its row)."""
    now_mono = time.monotonic()
    hit = _cache.get(id(ctx))
    if hit is None or now_mono - hit[0] > _READ_CACHE:
        try:
            with ctx.engine.connect() as conn:
                rows = conn.execute(select(web_nodes).order_by(web_nodes.c.node)).all()
        except Exception as exc:
            log.warning("node rows not read error=%r", exc)
            rows = []
        now = datetime.now(UTC)
        infos = [
            NodeInfo(
                r.node,
                r.url,
                r.role,
                bool(r.active),
                list(r.components or []),
                as_utc(r.seen_at),
                now - as_utc(r.seen_at) < STALE,
                False,
            )
            for r in rows
        ]
        hit = _cache[id(ctx)] = (now_mono, infos)
    me = snapshot(ctx)
    here = NodeInfo(
        me["node"],
        me["url"],
        me["role"],
        me["active"],
        me["components"],
        datetime.now(UTC),
        True,
        True,
    )
    return [here, *(n for n in hit[1] if n.node != here.node)]


def active_node(ctx: AppContext) -> NodeInfo | None:
    """Another node that says it is active (fresh), when this one is not."""
    for info in known_nodes(ctx):
        if not info.here and info.active and info.fresh and info.role in ("runtime", "all"):
            return info
    return None


def page_banner(ctx: AppContext) -> dict[str, Any] | None:
    """What a standby's pages say at the top: None on an active node."""
    if ctx.services.health.active:
        return None
    other = active_node(ctx)
    return {
        "node": ctx.settings.node,
        "active_node": other.node if other else None,
        "active_url": other.url if other else None,
    }
