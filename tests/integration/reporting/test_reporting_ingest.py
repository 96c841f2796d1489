"""Ingestion and reports on a hand-written scenario, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from reporting_scenario import (
    EXPERTS,
    QUEUE_V1,
    QUEUES_15M,
    QUEUES_60M,
    T0,
    Feed,
    config_version,
    state,
    task,
    tasks,
    write_all,
)
from sqlalchemy import Engine, func, select, update

from expertline.db import migrate
from expertline.db.engine import as_utc, make_engine
from expertline.errors import InvalidInput
from expertline.records.feed import EXPERT_STATE, TASK_RECORD
from expertline.reporting import migrate as reporting_migrate
from expertline.reporting.ingest import Ingester
from expertline.reporting.reports import (
    expert_report,
    parse_range,
    queue_report,
    task_report,
    to_csv,
)
from expertline.reporting.tables import (
    report_cursors,
    report_expert_states,
    report_offers,
    report_queue_intervals,
    report_tasks,
)

NOW = T0 + timedelta(hours=2)


@pytest.fixture
def rengine(engine: Engine) -> Engine:
    """The runtime database with the reporting schema beside it (the default layout)."""
    reporting_migrate.upgrade(engine)
    return engine


def hour(interval: str = "15m"):
    return parse_range("2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z", interval)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (report_tasks, report_offers, report_expert_states)
        }


def test_golden_scenario_gives_exact_reports(rengine: Engine) -> None:
    write_all(rengine)
    ing = Ingester(rengine, rengine)
    ing.run_until_idle()

    assert queue_report(rengine, hour("15m")) == QUEUES_15M
    assert queue_report(rengine, hour("30m"))[0]["offered"] == 5  # 10:00 + 10:15 billing
    assert queue_report(rengine, hour("60m")) == QUEUES_60M
    assert expert_report(rengine, hour(), now=NOW) == EXPERTS

    items, nxt = task_report(rengine, hour())
    assert nxt is None
    assert [i["task_id"] for i in items] == [f"t{n}" for n in (1, 2, 3, 4, 5, 6, 7, 9, 8)]
    t2 = items[1]
    assert t2 == {
        "task_id": "t2",
        "code": "t2",
        "queue_id": "billing",
        "queue_name": "Billing",
        "status": "completed",
        "call_disposition": 13,
        "expert_id": "bob",
        "created_at": "2026-11-25T10:05:00.000Z",
        "ended_at": "2026-11-25T10:06:25.000Z",
        "wait": 25.0,
        "talk_time": 60.0,
        "offers": [
            {
                "offer_id": "t2-o1",
                "expert_id": "alice",
                "created_at": "2026-11-25T10:05:01.000Z",
                "ended_at": "2026-11-25T10:05:21.000Z",
                "outcome": "timeout",
            },
            {
                "offer_id": "t2-o2",
                "expert_id": "bob",
                "created_at": "2026-11-25T10:05:21.000Z",
                "ended_at": "2026-11-25T10:05:25.000Z",
                "outcome": "accepted",
            },
        ],
    }
    csv_text = "".join(to_csv("queues", QUEUES_60M))
    assert csv_text.splitlines()[0] == (
        "interval_start,queue_id,queue_name,offered,handled,abandoned,overflowed,rejected,"
        "avg_wait,max_wait,service_level,avg_handle_time,service_level_2"
    )
    assert csv_text.splitlines()[2] == (
        "2026-11-25T10:00:00.000Z,sales,Sales,4,1,0,2,1,88.333,120.0,1.0,120.0,1.0"
    )
    task_csv = "".join(to_csv("tasks", items)).splitlines()
    assert task_csv[2].endswith(",25.0,60.0,alice:timeout;bob:accepted")


def test_rename_keeps_old_names_on_old_rows(rengine: Engine) -> None:
    write_all(rengine)
    Ingester(rengine, rengine).run_until_idle()
    items, _ = task_report(rengine, hour())
    names = {i["task_id"]: i["queue_name"] for i in items if i["queue_id"] == "billing"}
    assert names == {
        "t1": "Billing",
        "t2": "Billing",
        "t3": "Billing",
        "t4": "Billing",
        "t5": "Billing Desk",
        "t6": "Billing Desk",
    }
    early = parse_range("2026-11-25T10:00:00Z", "2026-11-25T10:15:00Z")
    assert {r["expert_id"]: r["expert_name"] for r in expert_report(rengine, early, now=NOW)} == {
        "alice": "Alice Ng",
        "bob": "Bob Li",
    }


def test_stop_for_an_hour_then_catch_up_without_loss(rengine: Engine) -> None:
    feed = write_all(rengine)
    first = Ingester(rengine, rengine, batch_size=5)
    first.run_once()
    first.run_once()  # stopped after two small batches
    # An hour of traffic while reporting is down.
    later = [
        task(f"late{n}", 60 + n, "billing", "completed", wait=3, talk=30, expert="bob", version=2)
        for n in range(40)
    ]
    feed.write([(TASK_RECORD, dict(t)) for t in later])
    second = Ingester(rengine, rengine, batch_size=7)  # a new process
    second.run_until_idle()
    assert counts(rengine)["report_tasks"] == len(tasks()) + 40
    assert second.cursor() == feed_max(rengine)
    late = queue_report(rengine, parse_range("2026-11-25T11:00:00Z", "2026-11-25T12:00:00Z", "60m"))
    assert [(r["queue_id"], r["offered"], r["handled"]) for r in late] == [("billing", 40, 40)]
    assert queue_report(rengine, hour("15m")) == QUEUES_15M


def test_crash_before_cursor_commit_leaves_nothing_and_replays(
    rengine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_all(rengine)
    ing = Ingester(rengine, rengine)

    def crash(*_args: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(ing, "_set_cursor", crash)
    with pytest.raises(RuntimeError):
        ing.run_once()
    assert counts(rengine) == {"report_tasks": 0, "report_offers": 0, "report_expert_states": 0}
    monkeypatch.undo()
    Ingester(rengine, rengine).run_until_idle()
    assert queue_report(rengine, hour("15m")) == QUEUES_15M
    assert expert_report(rengine, hour(), now=NOW) == EXPERTS


def test_redelivery_after_cursor_moved_back_adds_nothing(rengine: Engine) -> None:
    """At-least-once delivery: rows read twice are recognised and skipped."""
    feed = write_all(rengine)
    Ingester(rengine, rengine).run_until_idle()
    before = counts(rengine)
    with rengine.begin() as conn:
        conn.execute(
            update(report_cursors).where(report_cursors.c.consumer == "feed").values(position=0)
        )
    # And the runtime writes one record again (e.g. re-sent after a failover).
    feed.write([(TASK_RECORD, dict(tasks()[0]))])
    Ingester(rengine, rengine, batch_size=4).run_until_idle()
    assert counts(rengine) == before
    assert queue_report(rengine, hour("15m")) == QUEUES_15M
    assert expert_report(rengine, hour(), now=NOW) == EXPERTS
    with rengine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(report_queue_intervals)).scalar() == 5


def test_hole_in_feed_ids_waits_then_is_skipped(rengine: Engine) -> None:
    clock = [100.0]
    feed = Feed(rengine)
    one, three = (
        task("h1", 0, "billing", "completed", wait=1),
        task("h3", 1, "billing", "completed", wait=1),
    )
    feed.write([(TASK_RECORD, dict(one)), (TASK_RECORD, dict(three))], ids=[1, 3])
    ing = Ingester(rengine, rengine, gap_grace=5.0, monotonic=lambda: clock[0])
    r = ing.run_once()
    assert (r.tasks, r.cursor) == (1, 1)
    assert "waiting for ids 2..2" in r.reason
    clock[0] += 1.0
    feed.write([(EXPERT_STATE, dict(state("alice", 0, "available")))], ids=[2])  # committed late
    r = ing.run_once()
    assert (r.tasks, r.states, r.cursor) == (1, 1, 3)
    feed.write([(TASK_RECORD, dict(task("h5", 2, "billing", "completed", wait=1)))], ids=[5])
    assert ing.run_once().cursor == 3
    clock[0] += 6.0
    r = ing.run_once()
    assert (r.tasks, r.cursor) == (1, 5)
    assert "skipped feed ids 4..4" in r.reason


def test_separate_reporting_database(tmp_path: Path) -> None:
    runtime = make_engine(f"sqlite:///{tmp_path / 'runtime.db'}")
    reporting = make_engine(f"sqlite:///{tmp_path / 'reporting.db'}")
    migrate.upgrade(runtime)
    reporting_migrate.upgrade(reporting)
    try:
        write_all(runtime)
        Ingester(runtime, reporting).run_until_idle()
        assert queue_report(reporting, hour("60m")) == QUEUES_60M
        assert expert_report(reporting, hour(), now=NOW) == EXPERTS
        assert counts(reporting)["report_tasks"] == 9
    finally:
        runtime.dispose()
        reporting.dispose()


def test_task_report_pages_with_a_cursor(rengine: Engine) -> None:
    write_all(rengine)
    Ingester(rengine, rengine).run_until_idle()
    seen: list[str] = []
    after = None
    while True:
        items, after = task_report(rengine, hour(), limit=4, after=after)
        seen += [i["task_id"] for i in items]
        if after is None:
            break
    assert seen == [f"t{n}" for n in (1, 2, 3, 4, 5, 6, 7, 9, 8)]


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_range("yesterday", "2026-11-25", "7m")
    assert [p.path for p in exc.value.details] == ["from", "interval"]
    with pytest.raises(InvalidInput):
        parse_range("2026-11-25T11:00", "2026-11-25T10:00")
    rng = parse_range(None, None, None, now=datetime(2026, 11, 25, 12, tzinfo=UTC))
    assert (rng.start.hour, rng.end.hour, rng.interval) == (12, 12, 15)


def feed_max(engine: Engine) -> int:
    from reporting_scenario import routing_feed

    with engine.connect() as conn:
        return int(conn.execute(select(func.max(routing_feed.c.id))).scalar_one())


def test_ingesting_while_the_runtime_writes(rengine: Engine) -> None:
    """The runtime commits feed rows all the time; a batch must neither fail on the write
    lock (SQLite) nor miss or repeat a row."""
    import threading

    feed = Feed(rengine)
    errors: list[BaseException] = []

    def runtime() -> None:
        try:
            for n in range(60):
                feed.write(
                    [
                        (TASK_RECORD, dict(task(f"c{n}-{k}", n, "billing", "completed", wait=1)))
                        for k in range(5)
                    ]
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    writer = threading.Thread(target=runtime)
    writer.start()
    ing = Ingester(rengine, rengine, batch_size=7)
    while writer.is_alive():
        ing.run_once()
    writer.join(timeout=60)
    ing.run_until_idle()
    assert errors == []
    assert counts(rengine)["report_tasks"] == 300
    assert ing.cursor() == feed_max(rengine)


def test_configuration_copied_in_the_same_batch_names_its_tasks(rengine: Engine) -> None:
    """Rows are built before the write transaction, with the names known then; a batch that
    copies a new configuration version must name its tasks by that version."""
    feed = write_all(rengine)
    ing = Ingester(rengine, rengine)
    ing.run_until_idle()
    config_version(
        rengine,
        3,
        T0 + timedelta(minutes=50),
        [
            (
                "queue",
                "billing",
                "update",
                {**QUEUE_V1["billing"], "name": "Billing 3", "service_level": "45s"},
            )
        ],
    )
    feed.write([(TASK_RECORD, dict(task("v3", 75, "billing", "completed", wait=40, version=3)))])
    assert ing.run_once().config_versions == 1
    with rengine.connect() as conn:
        row = conn.execute(
            select(report_tasks.c.queue_name, report_tasks.c.sl_threshold).where(
                report_tasks.c.task_id == "v3"
            )
        ).one()
    assert tuple(row) == ("Billing 3", 45.0)
    (late,) = queue_report(
        rengine, parse_range("2026-11-25T11:15:00Z", "2026-11-25T11:30:00Z", "15m")
    )
    assert (late["queue_name"], late["handled"], late["service_level"]) == ("Billing 3", 1, 1.0)


def test_times_in_any_iso_form_are_the_same_instants(rengine: Engine) -> None:
    """The runtime writes ``…T10:00:00.125+00:00``; other writers (older versions, a moved
    cursor over hand-made rows) may not. Every form lands as the same instant."""
    runtime_form = task(
        "a", 3, "billing", "completed", wait=4, expert="bob", offers=[("bob", 1, 4, "accepted")]
    )
    other = dict(runtime_form, task_id="b")
    moments = ("created_at", "assigned_at", "connected_at", "ended_at")
    for key in moments:
        runtime_form[key] = utc_text(runtime_form[key]).isoformat(timespec="milliseconds")
    other["created_at"] = utc_text(other["created_at"]).isoformat().replace("+00:00", "Z")
    other["assigned_at"] = (
        utc_text(other["assigned_at"]).astimezone(timezone(timedelta(hours=-5))).isoformat()
    )
    other["connected_at"] = utc_text(other["connected_at"]).replace(tzinfo=None).isoformat()
    other["ended_at"] = utc_text(other["ended_at"]).isoformat(" ", timespec="microseconds")
    other["offers"] = [dict(runtime_form["offers"][0], offer_id="b-o1")]
    Feed(rengine).write([(TASK_RECORD, dict(runtime_form)), (TASK_RECORD, other)])
    Ingester(rengine, rengine).run_until_idle()
    columns = [report_tasks.c[k] for k in moments]
    with rengine.connect() as conn:
        got = {
            r[0]: [as_utc(v) for v in r[1:]]
            for r in conn.execute(select(report_tasks.c.task_id, *columns))
        }
        offers = conn.execute(
            select(report_offers.c.created_at, report_offers.c.ended_at).order_by(
                report_offers.c.offer_id
            )
        ).all()
    assert got["a"] == got["b"] == [utc_text(runtime_form[k]) for k in moments]
    assert offers[0] == offers[1]


def utc_text(value: object) -> datetime:
    return datetime.fromisoformat(str(value)).astimezone(UTC)
