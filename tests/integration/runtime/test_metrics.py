"""``/metrics`` shows the runtime as it is: tasks, offers, queues, experts, latencies, backlog."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from rt_harness import Harness

from support.wait import async_eventually


async def _scrape(h: Harness) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics``: (name, labels) -> value."""
    r = await h.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), float("nan"))


async def test_metrics_follow_tasks_offers_queues_and_experts(h: Harness) -> None:
    before = await _scrape(h)
    assert _value(before, "expertline_tasks_created_total") == 0
    assert _value(before, "expertline_experts", state="offline") == 3
    assert _value(before, "expertline_queue_waiting", queue="billing") == 0

    # one task waits with nobody available
    waiting = (await h.create()).json()
    await h.presence("alice", "available")
    await h.presence("bob", "available")
    offers = await async_eventually(lambda: h.open_offers("alice"), timeout=5)
    m = await _scrape(h)
    assert _value(m, "expertline_tasks_created_total") == 1
    assert _value(m, "expertline_tasks", status="offered") == 1
    assert _value(m, "expertline_queue_waiting", queue="billing") == 1
    assert _value(m, "expertline_queue_waiting", queue="support") == 0
    assert _value(m, "expertline_queue_oldest_wait_seconds", queue="billing") >= 0
    assert _value(m, "expertline_offers_open") == 2
    assert _value(m, "expertline_experts", state="reserved") == 2
    assert _value(m, "expertline_experts", state="offline") == 1

    # alice takes it (bob's offer is withdrawn), the call connects and ends
    assert (await h.answer(offers[0], "accept")).status_code == 200
    assert (await h.event(waiting["id"], "connected")).status_code == 200
    assert (await h.event(waiting["id"], "ended")).status_code == 200
    # a second task is abandoned while offered
    second = (await h.create()).json()
    await async_eventually(lambda: h.open_offers("bob"), timeout=5)
    assert (await h.event(second["id"], "abandoned")).status_code == 200

    m = await _scrape(h)
    assert _value(m, "expertline_tasks_created_total") == 2
    assert _value(m, "expertline_tasks_ended_total", status="completed", disposition="13") == 1
    assert _value(m, "expertline_tasks_ended_total", status="abandoned", disposition="2") == 1
    assert _value(m, "expertline_offers_total", outcome="accepted") == 1
    assert _value(m, "expertline_offers_total", outcome="withdrawn") >= 2
    assert _value(m, "expertline_offers_total", outcome="declined") == 0
    assert _value(m, "expertline_events_total", type="task.queued") == 2
    assert _value(m, "expertline_queue_waiting", queue="billing") == 0
    for status in ("queued", "offered", "assigned", "connected"):
        assert _value(m, "expertline_tasks", status=status) == 0
    assert _value(m, "expertline_runtime_decision_seconds_count") >= 5
    assert _value(m, "expertline_runtime_commit_seconds_count") >= 5
    assert _value(m, "expertline_runtime_commit_seconds_bucket", le="+Inf") == _value(
        m, "expertline_runtime_commit_seconds_count"
    )
    assert _value(m, "expertline_webhook_backlog", target="task-webhooks") == 0


async def test_the_webhook_backlog_counts_deliveries_not_made_yet(h: Harness) -> None:
    h.service.webhooks._base = 60.0  # the first retry is far away
    await h.create(callback_url="http://127.0.0.1:9/unreachable")

    async def backlog() -> float | None:
        value = _value(await _scrape(h), "expertline_webhook_backlog", target="task-webhooks")
        return value if value == 1 else None

    assert await async_eventually(backlog, timeout=10) == 1


async def test_a_node_without_a_runtime_still_answers(h: Harness) -> None:
    await h.service.async_stop()
    m = await _scrape(h)
    assert _value(m, "expertline_tasks_created_total") == 0  # counts stay, live state goes
    assert ("expertline_queue_waiting", frozenset({("queue", "billing")})) not in m


DOCS = Path(__file__).resolve().parents[3] / "docs"
# Shown by parts this harness does not run (SIP front, presence sources, reporting), or only
# once something happened (a refused change, a component's report).
ELSEWHERE = {
    "expertline_presence_link_up",
    "expertline_presence_link_state",
    "expertline_sip_responses_total",
    "expertline_reporting_ingested_total",
    "expertline_reporting_lag_rows",
    "expertline_runtime_refused_changes_total",
    "expertline_component_up",
}


def _documented() -> set[str]:
    """The metric names of the table in the operations guide."""
    text = (DOCS / "operations.md").read_text()
    table = text[text.index("### Metrics") : text.index("### When the database cannot")]
    rows = re.findall(r"^\| `(expertline_\w+)`(?:, `(expertline_\w+)`)?", table, re.M)
    return {name for row in rows for name in row if name}


async def test_the_docs_and_the_dashboard_name_the_metrics_there_are(h: Harness) -> None:
    documented = _documented()
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    queried = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"expertline_\w+", target["expr"])
    }
    assert queried <= documented, queried - documented
    task = (await h.create(callback_url="http://127.0.0.1:9/unreachable")).json()
    assert (await h.event(task["id"], "abandoned")).status_code == 200
    scraped = {re.sub(r"_(bucket|count|sum|created)$", "", name) for name, _ in await _scrape(h)}
    assert documented - ELSEWHERE <= scraped, (documented - ELSEWHERE) - scraped
