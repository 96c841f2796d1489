"""``/admin`` with 100,000 experts: pages are paged and searched on the server and stay quick.

The measured times are printed (``-s``); the bounds are loose enough for a busy CI machine and
tight enough to catch a page that renders or scans every expert in the browser.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from expertline.web import users
from support.browser import PASSWORD, sign_in
from support.processes import ServerProcess
from support.sqlite_node import configured_sqlite, serving

pytestmark = pytest.mark.browser

EXPERTS = 100_000
BOUND_S = 2.0


def big_config() -> str:
    lines = [
        "attributes:",
        "  - {name: billing, type: proficiency}",
        "  - {name: language, type: list, values: [en, es, fr]}",
        "experts:",
    ]
    lines += [
        f"  - {{id: e{i:06d}, name: Expert {i}, im: e{i}@example.test, "
        f"phone: 'sip:{i}@pbx.example.test', attributes: {{billing: {1 + i % 100}}}}}"
        for i in range(EXPERTS)
    ]
    lines += ["queues:", "  - {id: billing, name: Billing, select: 'billing >= 50'}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServerProcess]:
    url, engine = configured_sqlite(tmp_path, big_config())
    users.create_user(engine, "ann", "admin", PASSWORD)
    engine.dispose()
    with serving(tmp_path, url, "--role", "runtime", "--no-presence") as server:
        yield server


def test_pages_stay_quick_with_100000_experts(node: ServerProcess, new_page, shot) -> None:
    page = new_page()
    sign_in(page, node.base_url, "/admin/config/experts", "ann")
    times: dict[str, float] = {}

    def timed(name: str, path: str) -> None:
        started = time.perf_counter()
        page.goto(node.base_url + path)
        page.wait_for_load_state()
        times[name] = time.perf_counter() - started

    timed("list, first page", "/admin/config/experts")
    assert page.locator("#objects tbody tr").count() == 50
    assert "of 100000" in page.locator("#counts").inner_text()
    timed("list, page 1,500", "/admin/config/experts?page=1500")
    assert page.locator("#objects tbody tr").first.get_attribute("data-id") == "e074950"
    timed("search by name", "/admin/config/experts?q=Expert+99999")
    assert page.locator("#objects tbody tr").count() == 1
    shot(page, "search")
    timed("search, many matches", "/admin/config/experts?q=e0123")
    timed("one expert", "/admin/config/experts/e054321")
    page.fill("#f-name", "Expert Renamed")
    started = time.perf_counter()
    page.click("#save")
    page.wait_for_url("**saved=2")
    times["save one expert"] = time.perf_counter() - started
    timed("dashboard", "/admin")
    expect(page.locator("#count-total")).to_have_text(str(EXPERTS))
    for name, seconds in times.items():
        print(f"{name:>22}: {seconds * 1000:6.0f} ms")
    slow = {name: s for name, s in times.items() if s > BOUND_S}
    assert not slow, slow
