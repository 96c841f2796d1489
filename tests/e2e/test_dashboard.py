"""The live dashboard (``/admin``) in Chromium: it follows the event feed without reloading,
and stays smooth while 1,000 events a second arrive."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import Engine, func, insert, select

from expertline.db.tables import routing_feed
from expertline.security.tokens import create_token
from expertline.web import users
from support.browser import PASSWORD, sign_in
from support.processes import ServerProcess
from support.runtime_client import TWO_QUEUES_YAML
from support.sqlite_node import configured_sqlite, serving
from support.wait import eventually

pytestmark = pytest.mark.browser


def prepared(tmp_path: Path, yaml: str = TWO_QUEUES_YAML) -> tuple[str, Engine]:
    url, engine = configured_sqlite(tmp_path, yaml)
    users.create_user(engine, "sam", "supervisor", PASSWORD)
    return url, engine


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[ServerProcess, Engine]]:
    url, engine = prepared(tmp_path)
    with serving(tmp_path, url, "--no-presence") as server:
        yield server, engine
    engine.dispose()


def test_the_dashboard_shows_an_expert_available_and_a_task_waiting_live(
    node: tuple[ServerProcess, Engine], new_page, shot
) -> None:
    server, engine = node
    admin = create_token(engine, "ops", "admin")
    client = create_token(engine, "cc", "routing-client")
    page = new_page()
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    sign_in(page, server.base_url, "/admin", "sam")
    expect(page.locator("#live-state")).to_have_text("Live")
    expect(page.locator("#count-available")).to_have_text("0")
    expect(page.locator("#count-offline")).to_have_text("3")
    loaded = len(navigations)

    with server.client(admin) as http:
        r = http.put("/api/v1/experts/carol/presence", json={"status": "available"})
        assert r.status_code == 200, r.text
    expect(page.locator("#count-available")).to_have_text("1")
    expect(page.locator("#count-offline")).to_have_text("2")

    with server.client(admin) as http:
        r = http.put("/api/v1/experts/carol/presence", json={"status": "away"})
        assert r.status_code == 200, r.text
    with server.client(client) as http:
        r = http.post("/api/v1/tasks", json={"queue": "support", "caller": "+15550001"})
        assert r.status_code == 201, r.text
    row = page.locator("#queues tr[data-queue=support]")
    expect(row.locator(".waiting")).to_have_text("1")
    expect(page.locator("#tasks-queued")).to_have_text("1")
    expect(page.locator("#count-away")).to_have_text("1")
    expect(row.locator(".oldest")).to_have_text(re.compile(r"^\d+ s$"))  # its wait, ticking
    assert len(navigations) == loaded  # all of it without reloading the page
    shot(page, "dashboard")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "dashboard-phone")


def test_the_dashboard_stays_smooth_at_1000_events_a_second(
    tmp_path: Path, new_page, artefacts
) -> None:
    experts = 200
    yaml = "experts:\n" + "".join(
        f"  - {{id: x{i}, name: X {i}, phone: 'sip:{i}@pbx'}}\n" for i in range(experts)
    )
    url, engine = prepared(tmp_path, yaml)
    # An admin node (no runtime of its own): the test writes the feed rows a runtime would.
    with serving(tmp_path, url, "--role", "admin") as server:
        page = new_page()
        sign_in(page, server.base_url, "/admin", "sam")
        expect(page.locator("#live-state")).to_have_text("Live")
        stats = page.locator("#board-stats")
        before = int(stats.get_attribute("data-renders") or 0)
        with engine.connect() as conn:
            next_id = (
                int(
                    conn.execute(select(func.coalesce(func.max(routing_feed.c.id), 0))).scalar_one()
                )
                + 1
            )
        rate, seconds, step = 1000, 5, 0.05
        states = ("available", "reserved", "busy", "wrap_up", "away")
        started = time.monotonic()
        written = 0
        while written < rate * seconds:
            batch = []
            for _ in range(int(rate * step)):
                i = written % experts
                state = states[(written // experts) % len(states)]
                batch.append(
                    {
                        "id": next_id + written,
                        "type": "expert.state",
                        "task_id": None,
                        "expert_id": f"x{i}",
                        "data": {"expert_id": f"x{i}", "state": state},
                        "created_at": datetime.now(UTC),
                    }
                )
                written += 1
            with engine.begin() as conn:
                conn.execute(insert(routing_feed), batch)
            delay = started + written / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        elapsed = time.monotonic() - started
        final = states[((written - 1) // experts) % len(states)]
        bucket = {"reserved": "offered"}.get(final, final)
        expect(page.locator(f"#count-{bucket}")).to_have_text(str(experts), timeout=20_000)
        eventually(lambda: int(page.locator("#board-events").inner_text()) >= written, 20)
        renders = int(stats.get_attribute("data-renders") or 0) - before
        longest = float(stats.get_attribute("data-max-render-ms") or 0)
        long_tasks = int(stats.get_attribute("data-long-tasks") or 0)
        print(
            f"\n{written} events in {elapsed:.1f} s ({written / elapsed:.0f}/s): "
            f"{renders} redraws, longest {longest:.1f} ms, {long_tasks} long tasks"
        )
        (artefacts / "dashboard-1000-events.txt").write_text(
            f"events={written} seconds={elapsed:.2f} redraws={renders} "
            f"longest_redraw_ms={longest:.1f} long_tasks={long_tasks}\n"
        )
        assert written / elapsed > 900
        assert renders <= 4 * (elapsed + 5)  # coalesced: at most four redraws a second
        assert longest < 50
        assert long_tasks <= 2
    engine.dispose()
