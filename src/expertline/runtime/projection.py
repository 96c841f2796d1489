"""The projection: the routing core's exported objects as rows to store and views to serve.

Pure functions of their inputs (no I/O, no clock, no event loop). ``Projector.close`` turns
what the core marked dirty into the rows of a batch (``store.Batch``) and the views its commit
publishes; ``task_view`` is the one builder of a task's API view, used for tasks in memory and
for tasks read back from the database (``task_view_from_row``), so a task has the same shape
on every node, before and after a restart or a failover.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from expertline.instants import iso
from expertline.records.feed import EXPERT_STATE, TASK_RECORD
from expertline.routing import commands as cmd
from expertline.routing.core import Dirty
from expertline.routing.model import RoutingConfig
from expertline.routing.states import FINAL_TASK, WAITING, TaskStatus
from expertline.runtime import store
from expertline.runtime.ports import OfferView, TaskView
from expertline.visibility import apply_show, show_caller

# The core's statuses as plain strings (views and rows carry them as text).
ACTIVE_STATUSES = frozenset(str(s) for s in TaskStatus if s not in FINAL_TASK)
WAITING_STATUSES = frozenset(str(s) for s in WAITING)


class CoreReader(Protocol):
    """What the projection reads of the core (``core_adapter.CoreAdapter``)."""

    def export_task(self, task_id: str) -> dict[str, Any] | None: ...

    def export_offer(self, offer_id: str) -> dict[str, Any] | None: ...

    def export_expert(self, expert_id: str) -> dict[str, Any] | None: ...

    def export_meta(self) -> dict[str, Any]: ...


# --- tasks -------------------------------------------------------------------------------------


def task_view(d: dict[str, Any], meta: dict[str, Any], created_at: str | None = None) -> TaskView:
    """The API view of an exported task (``RoutingCore.export_task``: every key present) and
    its metadata (origin, callback URL, disposition). ``created_at``: the text already shown,
    if any. Runs for every task of every batch, hence the plain indexing."""
    ended = d["ended_at"]
    created_ts = d["created_at"]
    return TaskView(
        id=d["id"],
        code=d["code"],
        status=d["status"],
        queue=d["queue_id"],
        expert=d["expert_id"],
        label=d["label"],
        created_at=created_at or iso(created_ts) or "",
        extra={
            "channel": d["channel"],
            "caller": d["caller"],
            "priority": d["priority"],
            "external_id": d["external_id"],
            "dialed_number": d["dialed_number"],
            "call_disposition": meta.get("call_disposition"),
            "ended_at": None if ended is None else iso(ended),
            "origin": meta.get("origin", "http"),
            "callback_url": meta.get("callback_url"),
            "offers": [{"id": oid, "expert": eid} for eid, oid in d["open_offers"].items()],
            "_created_ts": created_ts,
        },
    )


# What a stored task's state may lack (rows written by an older version, or a bare state).
_STORED_DEFAULTS: dict[str, Any] = {
    "channel": None,
    "caller": None,
    "priority": None,
    "dialed_number": None,
    "created_at": None,
    "ended_at": None,
    "open_offers": {},
}


def task_view_from_row(row: dict[str, Any]) -> TaskView:
    """The view of a stored task (``runtime_tasks``): its stored export through ``task_view``;
    the row's columns win where both say something."""
    state = row.get("state") or {}
    stored_meta = state.get("_meta") or {}
    d = {
        **_STORED_DEFAULTS,
        **state,
        "id": row["task_id"],
        "code": row["code"],
        "status": row["status"],
        "queue_id": row["queue_id"],
        "expert_id": row.get("expert_id"),
        "label": row.get("label"),
        "external_id": row.get("external_id"),
    }
    if d["open_offers"] is None:
        d["open_offers"] = {}
    meta = {
        "origin": row.get("origin") or stored_meta.get("origin", "http"),
        "callback_url": row.get("callback_url"),
        "call_disposition": stored_meta.get("call_disposition"),
    }
    created = store.as_utc(row["created_at"])
    text = store.iso(created) or ""
    return task_view(d, meta, text)


def task_json(view: TaskView) -> dict[str, Any]:
    """The API body of a task (also the webhook payload's ``task``)."""
    body = {
        "id": view.id,
        "code": view.code,
        "status": view.status,
        "queue": view.queue,
        "expert": view.expert,
        "label": view.label,
        "created_at": view.created_at,
    }
    body.update({k: v for k, v in view.extra.items() if not k.startswith("_")})
    return body


# --- offers ------------------------------------------------------------------------------------


def offer_view(
    o: dict[str, Any],
    t: dict[str, Any] | None,
    config: RoutingConfig,
    rules: dict[str, str],
) -> OfferView:
    """The API/IM view of an exported offer; ``t``: its task's export (None: unknown);
    ``rules``: the queue's ``show`` rules (what an expert may see of the task)."""
    queue_id = o["queue_id"]
    queue = config.queues.get(queue_id)
    return OfferView(
        id=o["id"],
        task_id=o["task_id"],
        code=o["code"],
        expert_id=o["expert_id"],
        status=str(o["status"]),
        queue_id=queue_id,
        queue_name=queue.name if queue else queue_id,
        caller=show_caller(t["caller"], rules) if t else None,
        created_at=float(o["created_at"]),
        expires_at=o["expires_at"],
        task_created_at=float(t["created_at"] if t else o["created_at"]),
        notice_only=bool(o["notice_only"]),
        shown_attributes=apply_show(t["attributes"] if t else {}, rules),
    )


def offer_from_payload(p: dict[str, Any]) -> OfferView:
    """A minimal view when the core no longer knows the offer (effects resumed after restart)."""
    return OfferView(
        id=p["offer_id"],
        task_id=p["task_id"],
        code=p["code"],
        expert_id=p["expert_id"],
        status="withdrawn" if "reason" in p else "open",
        queue_id="",
        queue_name="",
        caller=None,
        created_at=0.0,
        expires_at=p.get("expires_at"),
        task_created_at=0.0,
        notice_only=bool(p.get("notice_only")),
    )


# The commands the channels deliver, by the outbox kind they are stored as.
EFFECT_KINDS: dict[type[cmd.Command], str] = {
    cmd.SendOffer: "offer",
    cmd.WithdrawOffer: "withdrawn",
    cmd.ConfirmAccepted: "accepted",
    cmd.NotifyExpert: "notice",
}


def effect_payload(c: cmd.Command) -> tuple[str, dict[str, Any]]:
    """A channel command as an outbox row's kind and payload (the command's fields)."""
    return EFFECT_KINDS[type(c)], {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}


# --- records -----------------------------------------------------------------------------------


def jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """A record's data as stored: a copy with sets and tuples as lists (JSON arrays)."""
    out = dict(data)
    for key, value in data.items():
        if isinstance(value, frozenset | set | tuple):
            out[key] = list(value)
    return out


def feed_row(c: cmd.Emit, feed_id: int, node: str, version: int, at: float) -> dict[str, Any]:
    """A feed row of an ``Emit`` (the core builds a fresh dict for each, stored as is)."""
    data = c.data
    if c.type == TASK_RECORD:
        data["node"] = data.get("node") or node
        data.setdefault("config_version", version)
    elif c.type == EXPERT_STATE and "config_version" not in data:
        data = {"config_version": version, **data}
    return {
        "id": feed_id,
        "type": c.type,
        "task_id": data.get("task_id"),
        "expert_id": data.get("expert_id"),
        "data": data,
        "created_at": at,
    }


def record_row(kind: str, data: dict[str, Any], key: int, node: str, now: float) -> dict[str, Any]:
    """An RCD or TCD row (``kind``) of a record's ``data``; ``key``: its recovery key."""
    when = data.get("at") or data.get("ended_at") or now
    row: dict[str, Any] = {
        "recovery_key": key,
        "datetime": float(when) if isinstance(when, int | float) else now,
        "task_id": data["task_id"],
        "peripheral_call_key": data.get("peripheral_call_key"),
        "router_call_key": data.get("router_call_key"),
        "dialed_number": data.get("dialed_number"),
        "ani": data.get("ani"),
        "expert_id": data.get("expert_id"),
        "queue_id": data.get("queue_id"),
        "node": node,
        "data": data,
    }
    if kind == "rcd":
        row["label"] = data.get("label")
    else:
        row["call_disposition"] = int(data["call_disposition"])
        for name in ("duration", "delay_time", "ring_time", "talk_time", "work_time"):
            row[name] = float(data.get(name) or 0.0)
    return row


# --- closing a batch ---------------------------------------------------------------------------


@dataclass
class Closed:
    """The views a closed batch publishes once it commits (its rows are in the batch)."""

    tasks: dict[str, TaskView] = field(default_factory=dict)
    offers: dict[str, OfferView] = field(default_factory=dict)
    webhooks: bool = False  # task webhooks were added


@dataclass
class Projector:
    """Turns what the core marked dirty into rows and views.

    ``meta``: each task's metadata (origin, callback URL, external id, disposition), shared
    with the runtime; ``committed``: the view of a task as last published (for webhooks: a
    status change only); ``take``: the next value of a sequence (webhook ids)."""

    meta: dict[str, dict[str, Any]]
    committed: Callable[[str], TaskView | None]
    take: Callable[[str], int]
    config: Callable[[], RoutingConfig]
    show_rules: Callable[[str], dict[str, str]]

    def close(
        self, core: CoreReader, dirty: Dirty, batch: store.Batch, out: Closed, now: float
    ) -> None:
        # Runs over every object of every batch: the lookups it repeats are bound once.
        exported: dict[str, dict[str, Any]] = {}  # this batch's task snapshots, for offers
        export_task, committed, all_meta = core.export_task, self.committed, self.meta
        views, rows = out.tasks, batch.tasks
        for tid in dirty.tasks:
            d = export_task(tid)  # a fresh dict: the row's state and the view's source
            if d is None:
                continue
            exported[tid] = d
            meta = all_meta.get(tid) or {}
            old = committed(tid)
            view = views[tid] = task_view(d, meta, old.created_at if old else None)
            d["_meta"] = dict(meta)
            url = meta.get("callback_url")
            rows[tid] = {
                "task_id": tid,
                "code": view.code,
                "external_id": d["external_id"],
                "status": view.status,
                "active": d["active"],
                "queue_id": view.queue,
                "expert_id": view.expert,
                "label": view.label,
                "origin": meta.get("origin", "http"),
                "callback_url": url,
                "created_at": d["created_at"],
                "updated_at": now,
                "state": d,
            }
            if url and (old is None or old.status != view.status or old.label != view.label):
                batch.webhooks.append(self._webhook(tid, url, view, now))
                out.webhooks = True
        if dirty.offers:
            self._offers(core, dirty.offers, exported, batch, out, now)
        if dirty.experts:
            export_expert, experts = core.export_expert, batch.experts
            for eid in dirty.experts:
                export = export_expert(eid)
                if export is not None:
                    experts[eid] = {"expert_id": eid, "updated_at": now, "state": export}
        if dirty.meta:
            batch.meta["core"] = core.export_meta()

    def _offers(
        self,
        core: CoreReader,
        offer_ids: Iterable[str],
        exported: dict[str, dict[str, Any]],
        batch: store.Batch,
        out: Closed,
        now: float,
    ) -> None:
        config, show_rules = self.config(), self.show_rules
        for oid in offer_ids:
            o = core.export_offer(oid)
            if o is None:
                continue
            task_id = o["task_id"]
            t = exported.get(task_id) or core.export_task(task_id)
            out.offers[oid] = offer_view(o, t, config, show_rules(o["queue_id"]))
            batch.offers[oid] = {
                "offer_id": oid,
                "task_id": task_id,
                "expert_id": o["expert_id"],
                "status": o["status"],
                "updated_at": now,
                "state": o,
            }

    def _webhook(self, tid: str, url: str, view: TaskView, now: float) -> dict[str, Any]:
        return {
            "id": self.take("webhook"),
            "task_id": tid,
            "url": url,
            "body": {"event": "task.status", "task": task_json(view), "at": store.iso(now)},
            "created_at": now,
            "attempts": 0,
            "next_attempt_at": now,
            "delivered_at": None,
            "failed_at": None,
            "last_error": None,
        }


def empty_config(version: int = 0) -> RoutingConfig:
    return RoutingConfig(version=version, experts={}, queues={}, matches={})
