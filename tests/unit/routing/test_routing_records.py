"""Record helpers: the fast ISO time text is the one ``datetime`` would write, with ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from expertline.routing import records
from expertline.routing.live import Task
from expertline.routing.states import TaskStatus


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_iso_matches_datetime(ts: float) -> None:
    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    assert records.iso(ts) == expected.replace("+00:00", "Z")


@given(st.integers(min_value=0, max_value=4_000_000_000_000).map(lambda ms: ms / 1000))
def test_iso_of_whole_milliseconds(ts: float) -> None:
    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    assert records.iso(ts) == expected.replace("+00:00", "Z")


def test_iso_of_nothing_is_nothing() -> None:
    assert records.iso(None) is None


def _ended_task() -> Task:
    t = Task("t1", 3, "q", "voice", 1, None, "+1555", "800", "x-1", {"k": 1}, "1234", 100.0, 7)
    t.history.append(
        {
            "offer_id": "t1.1",
            "expert_id": "e",
            "queue_id": "q",
            "created_at": 100.5,
            "ended_at": 101.0,
            "outcome": "accepted",
        }
    )
    t.attempts.append({"expert_id": "f", "disposition": 19, "at": 100.25})
    t.expert_id, t.label = "e", "sip:e"
    t.assigned_at, t.connected_at, t.ended_at = 101.0, 102.0, 110.0
    t.status = TaskStatus.COMPLETED
    t.call_disposition = 13
    return t


def test_snapshot_and_records_keep_their_documented_key_order() -> None:
    """The dicts are built in two parts (see ``Task.to_dict``): same keys, same order."""
    t = _ended_task()
    assert list(t.to_dict()) == [
        "v", "id", "seq", "queue_id", "queues", "channel", "priority", "explicit_priority",
        "caller", "dialed_number", "external_id", "attributes", "code", "created_at",
        "enqueued_at", "config_version", "status", "active", "step", "open_offers", "offer_n",
        "cooldowns", "history", "attempts", "expert_id", "label", "assigned_at",
        "connected_at", "ended_at", "work_time", "call_disposition",
    ]  # fmt: skip
    assert Task.from_dict(t.to_dict()).to_dict() == t.to_dict()
    assert list(records.tcd(t, 13)) == [
        "task_id", "peripheral_call_key", "router_call_key", "dialed_number", "ani",
        "call_disposition", "duration", "delay_time", "ring_time", "talk_time", "work_time",
        "expert_id", "queue_id", "channel", "status", "started_at", "ended_at",
    ]  # fmt: skip
    record = records.task_record(t, 13)
    assert list(record) == [
        "task_id", "code", "external_id", "channel", "queue_id", "queues", "status",
        "call_disposition", "expert_id", "caller", "dialed_number", "created_at",
        "assigned_at", "connected_at", "ended_at", "wait", "ring_time", "talk_time",
        "work_time", "config_version", "node", "offers", "attempts",
    ]  # fmt: skip
    assert record["wait"] == 1.0 and record["ring_time"] == 1.0 and record["talk_time"] == 8.0
    assert record["offers"][0]["created_at"] == "1970-01-01T00:01:40.500Z"
    assert record["attempts"] == [
        {"expert_id": "f", "disposition": 19, "at": "1970-01-01T00:01:40.250Z"}
    ]
