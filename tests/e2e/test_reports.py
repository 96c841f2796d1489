"""``/reports`` in headless Chromium at 1280 px against a real ``expertline serve``: the default
range includes the current minute, the chart's overflowed/rejected bar counts only those,
the tables need no horizontal scroll, and task ids are short codes linking to the task."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "reporting"))

from reporting_scenario import QUEUES_60M, T0, TASK_RECORD, Feed, task, write_all

from expertline.db import migrate
from expertline.db.engine import make_engine
from expertline.security.tokens import create_token
from support.processes import running_server
from support.wait import eventually

pytestmark = pytest.mark.browser

RANGE = "from=2026-11-25T10:00&to=2026-11-25T11:00&interval=60m"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'expertline.db'}")
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def _no_horizontal_scroll(page: Any) -> bool:
    return bool(
        page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        and page.evaluate(
            "[...document.querySelectorAll('table')].every("
            "t => t.getBoundingClientRect().right <= window.innerWidth)"
        )
    )


def test_reports_at_1280_px(
    tmp_path: Path, engine: Engine, new_page: Callable[..., Any], shot: Callable[[Any, str], Path]
) -> None:
    token = create_token(engine, "analyst", "reporting")
    write_all(engine)
    # a task that ended in the current minute
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    minute = (now - T0).total_seconds() / 60
    recent = task("recent-0042", minute, "billing", "abandoned", wait=1.0, disposition=2)
    # and one that failed in the reported hour: in no bar of the chart
    failed = task("failed-0007", 30, "billing", "failed", wait=5.0, disposition=27)
    Feed(engine).write([(TASK_RECORD, dict(recent)), (TASK_RECORD, dict(failed))])
    env = {"EXPERTLINE_DB": str(engine.url), "EXPERTLINE_DATA_DIR": str(tmp_path)}
    with running_server(tmp_path, "--role", "reporting", env=env) as server:
        with server.client(token) as api:

            def ingested() -> bool:
                r = api.get("/api/v1/reports/tasks", params={"from": "2026-11-25T00:00"})
                return r.status_code == 200 and len(r.json()["items"]) == 11

            eventually(ingested, timeout=30, interval=0.1)

        page = new_page(1280, 900)
        page.goto(f"{server.base_url}/reports/tasks?token={token}")  # the default range
        assert page.locator("#tasks tr[data-task='recent-0042']").count() == 1
        shot(page, "tasks-default-range")

        page.goto(f"{server.base_url}/reports?{RANGE}")
        other = page.locator("svg[data-chart=queue-volume] rect[data-series=other]")
        shown = sum(int(other.nth(i).get_attribute("data-value")) for i in range(other.count()))
        assert shown == sum(q["overflowed"] + q["rejected"] for q in QUEUES_60M) == 3
        offered = sum(q["offered"] for q in QUEUES_60M) + 1  # the failed task
        bars = page.locator("svg[data-chart=queue-volume] rect[data-series]")
        stacked = sum(int(bars.nth(i).get_attribute("data-value")) for i in range(bars.count()))
        assert stacked == offered - 1  # the failed task is not drawn as overflowed/rejected
        assert _no_horizontal_scroll(page)
        shot(page, "overview-1280")

        page.goto(f"{server.base_url}/reports/tasks?{RANGE}")
        assert _no_horizontal_scroll(page)
        shot(page, "tasks-1280")
        link = page.locator("#tasks tr[data-task='t2'] a.task")
        assert link.inner_text() == "#t2"  # the task's short code
        assert link.get_attribute("title") == "t2"
        link.click()
        page.wait_for_url("**/reports/tasks/t2?*")
        assert page.locator("h2").first.inner_text() == "Task #t2"
        assert "t2" in page.locator("#task td.id").inner_text()
        assert page.locator("#offers tbody tr").count() == 2
        assert _no_horizontal_scroll(page)
        shot(page, "task-page")

        page.goto(f"{server.base_url}/reports/tasks/no-such-task")
        assert page.locator("[role=alert]").inner_text().startswith("Reporting has no ended task")
