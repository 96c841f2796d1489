"""``/reports`` in headless Chromium against a real ``expertline serve --role reporting``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from reporting_scenario import write_all
from sqlalchemy import Engine

from expertline.db import migrate
from expertline.db.engine import make_engine
from expertline.security.tokens import create_token
from support.chromium import chromium_browser
from support.processes import running_server
from support.wait import eventually

pytestmark = pytest.mark.browser

RANGE = "from=2026-11-25T10:00&to=2026-11-25T11:00"


@pytest.fixture
def browser_page() -> Iterator[object]:
    with chromium_browser() as browser:
        page = browser.new_page()
        page.set_default_timeout(15_000)
        yield page


@pytest.fixture
def prepared(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    url = f"sqlite:///{tmp_path / 'expertline.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    yield url, engine
    engine.dispose()


def test_reports_pages_in_a_browser(tmp_path: Path, prepared, browser_page) -> None:
    url, engine = prepared
    token = create_token(engine, "analyst", "reporting")
    env = {"EXPERTLINE_DB": url, "EXPERTLINE_DATA_DIR": str(tmp_path)}
    with running_server(tmp_path, "--role", "reporting", env=env) as server:
        write_all(engine)  # the runtime's feed, as a running runtime would write it
        with server.client(token) as api:

            def ingested() -> bool:
                r = api.get(f"/api/v1/reports/tasks?{RANGE}")
                return r.status_code == 200 and len(r.json()["items"]) == 9

            eventually(ingested, timeout=30, interval=0.1)

        page = browser_page
        page.goto(f"{server.base_url}/reports?{RANGE}")
        assert "/sign-in?next=" in page.url  # the one sign-in of every page
        page.fill("#token", "elt_not-a-token")
        page.click("#sign-in-token")
        assert page.locator("[role=alert]").inner_text().startswith("That token is unknown")
        page.fill("#token", token)
        page.click("#sign-in-token")
        page.wait_for_selector("svg[data-chart=queue-volume]")
        assert page.url.endswith(f"/reports?{RANGE}")

        chart = page.locator("svg[data-chart=queue-volume]")
        box = chart.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 80
        handled = chart.locator("rect[data-series=handled]")
        assert (
            sum(
                int(handled.nth(i).get_attribute("data-value") or 0) for i in range(handled.count())
            )
            == 5
        )
        assert page.locator("#queues tbody tr").count() == 5
        bars = page.locator("svg[data-chart=expert-utilization] rect[data-series=utilization]")
        assert [bars.nth(i).get_attribute("data-value") for i in range(bars.count())] == [
            "0.0556",
            "0.0208",
        ]
        assert (
            page.locator("#experts tr[data-expert=alice] td").first.inner_text() == "Alice Ng-Smith"
        )

        page.select_option("select[name=interval]", "60m")
        page.click("form.range button")
        page.wait_for_url("**interval=60m**")
        rows = page.locator("#queues tbody tr")
        assert rows.count() == 2
        assert rows.nth(0).locator("td").nth(1).inner_text() == "Billing Desk"

        page.click("header >> text=Tasks")
        page.wait_for_selector("#tasks")
        assert page.locator("#tasks tbody tr").count() == 9
        first = page.locator("#tasks tr[data-task=t1] td")
        assert first.nth(1).inner_text() == "Billing"  # the name when it ran

        page.click("text=Sign out")
        page.wait_for_url("**/sign-in")
        page.goto(f"{server.base_url}/reports")
        assert "/sign-in?next=" in page.url
