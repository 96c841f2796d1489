"""Call dispositions (Unified ICM codes, SPEC §7) and the records the core writes.

The core knows the task's timings on its own clock (epoch seconds); the runtime adds
``recovery_key``, ``datetime`` and ``node`` when it stores an RCD/TCD. The task record sent to
reporting (``records.feed.TaskRecord``) carries the same facts with ISO 8601 UTC times.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from expertline.instants import iso as iso  # the core writes instants with it
from expertline.records.feed import AttemptRecord, OfferRecord, TaskRecord
from expertline.routing.live import Task
from expertline.routing.states import TaskStatus


class Disposition(IntEnum):
    """The Unified ICM call disposition codes expertline writes in TCDs and attempts (SPEC §7).
    Records carry the number; code names the meaning."""

    ABANDONED_QUEUE = 2  # Abandoned in Local Queue
    ABANDONED_RING = 3  # Abandoned Ring
    BUSY = 8
    FAILED_DEFAULT = 12  # Disconnect/drop reorder: the routing client says the delivery failed
    HANDLED_VOICE = 13  # Disconnect/drop handled primary route
    REDIRECTED = 15  # sent to a fallback label at max wait
    RING_NO_ANSWER = 19
    TIME_OUT = 22  # rejected: no expert and no fallback
    FAILED_SOFTWARE = 27  # outcome unknown because a node failed
    CHAT_ABANDONED_BEFORE_OFFER = 36
    CHAT_ABANDONED_WHILE_OFFERED = 37
    HANDLED_CHAT = 38  # Normal End Task
    MAX_TASK_LIFETIME = (
        41  # Maximum Task Lifetime Exceeded: still with its expert, end never reported
    )


# The names the core uses.
HANDLED_VOICE = Disposition.HANDLED_VOICE
HANDLED_CHAT = Disposition.HANDLED_CHAT
ABANDONED_QUEUE = Disposition.ABANDONED_QUEUE
ABANDONED_RING = Disposition.ABANDONED_RING
BUSY = Disposition.BUSY
FAILED_DEFAULT = Disposition.FAILED_DEFAULT
REDIRECTED = Disposition.REDIRECTED
RING_NO_ANSWER = Disposition.RING_NO_ANSWER
TIME_OUT = Disposition.TIME_OUT
FAILED_SOFTWARE = Disposition.FAILED_SOFTWARE
CHAT_ABANDONED_BEFORE_OFFER = Disposition.CHAT_ABANDONED_BEFORE_OFFER
CHAT_ABANDONED_WHILE_OFFERED = Disposition.CHAT_ABANDONED_WHILE_OFFERED
MAX_TASK_LIFETIME = Disposition.MAX_TASK_LIFETIME

# A delivery that failed at the phone: the task goes back to its queue.
DELIVERY_FAILURES = frozenset({Disposition.RING_NO_ANSWER, Disposition.BUSY})


def abandon_disposition(task: Task) -> int:
    """SPEC §7: queued 2 (chat 36), offered 2 (chat 37), ringing at the expert 3 (chat 37)."""
    chat = task.channel != "voice"
    if task.status is TaskStatus.QUEUED:
        return CHAT_ABANDONED_BEFORE_OFFER if chat else ABANDONED_QUEUE
    if task.status is TaskStatus.OFFERED:
        return CHAT_ABANDONED_WHILE_OFFERED if chat else ABANDONED_QUEUE
    return CHAT_ABANDONED_WHILE_OFFERED if chat else ABANDONED_RING


def handled_disposition(task: Task) -> int:
    return HANDLED_VOICE if task.channel == "voice" else HANDLED_CHAT


def timings(task: Task) -> dict[str, float]:
    """Queue wait, ring, talk and work seconds of an ended task.

    Ring time runs from the label to the answer when the call was reported connected; a task
    that ends without ``connected`` (a chat, a call whose client reports only its end) counts
    assigned-to-end as talk. A call handed off at its label (SIP redirect) is "connected" at
    the handoff, so its talk time is 0.
    """
    ended = task.ended_at if task.ended_at is not None else task.created_at
    wait = (task.assigned_at if task.assigned_at is not None else ended) - task.created_at
    ring = talk = 0.0
    if task.assigned_at is not None:
        if task.connected_at is not None:
            ring = task.connected_at - task.assigned_at
            talk = ended - task.connected_at
        elif task.status is TaskStatus.ABANDONED:
            ring = ended - task.assigned_at
        else:
            talk = ended - task.assigned_at
    return {
        "duration": round(ended - task.created_at, 3),
        "delay_time": round(max(0.0, wait), 3),
        "ring_time": round(max(0.0, ring), 3),
        "talk_time": round(max(0.0, talk), 3),
        "work_time": round(task.work_time, 3),
    }


def rcd(task: Task, label: str, expert_id: str | None, now: float) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "peripheral_call_key": task.code,
        "router_call_key": task.external_id,
        "dialed_number": task.dialed_number,
        "ani": task.caller,
        "label": label,
        "expert_id": expert_id,
        "queue_id": task.queue_id,
        "channel": task.channel,
        "delay_time": round(max(0.0, now - task.created_at), 3),
        "at": now,
    }


def tcd(task: Task, disposition: int, times: dict[str, float] | None = None) -> dict[str, Any]:
    # A display of at most 15 keys, then assignments: see ``Task.to_dict``.
    record: dict[str, Any] = {
        "task_id": task.id,
        "peripheral_call_key": task.code,
        "router_call_key": task.external_id,
        "dialed_number": task.dialed_number,
        "ani": task.caller,
        "call_disposition": disposition,
    }
    record.update(times or timings(task))
    record["expert_id"] = task.expert_id
    record["queue_id"] = task.queue_id
    record["channel"] = task.channel
    record["status"] = str(task.status)
    record["started_at"] = task.created_at
    record["ended_at"] = task.ended_at
    return record


def task_record(task: Task, disposition: int, times: dict[str, float] | None = None) -> TaskRecord:
    t = times or timings(task)
    offers: list[OfferRecord] = [
        {
            "offer_id": h["offer_id"],
            "expert_id": h["expert_id"],
            "queue_id": h["queue_id"],
            "created_at": iso(h["created_at"]) or "",
            "ended_at": iso(h.get("ended_at")),
            "outcome": h["outcome"],
        }
        for h in task.history
    ]
    attempts: list[AttemptRecord] = [
        {
            "expert_id": a["expert_id"],
            "disposition": int(a["disposition"]),
            "at": iso(a["at"]) or "",
        }
        for a in task.attempts
    ]
    # A display of at most 15 keys, then assignments: see ``Task.to_dict``.
    record: dict[str, Any] = {
        "task_id": task.id,
        "code": task.code,
        "external_id": task.external_id,
        "channel": task.channel,
        "queue_id": task.queue_id,
        "queues": list(task.queues),
        "status": str(task.status),
        "call_disposition": disposition,
        "expert_id": task.expert_id,
        "caller": task.caller,
        "dialed_number": task.dialed_number,
        "created_at": iso(task.created_at) or "",
        "assigned_at": iso(task.assigned_at),
        "connected_at": iso(task.connected_at),
        "ended_at": iso(task.ended_at) or "",
    }
    record["wait"] = t["delay_time"]
    record["ring_time"] = t["ring_time"]
    record["talk_time"] = t["talk_time"]
    record["work_time"] = t["work_time"]
    record["config_version"] = task.config_version
    record["node"] = ""
    record["offers"] = offers
    record["attempts"] = attempts
    return record  # type: ignore[return-value]  # every key of TaskRecord is set above
