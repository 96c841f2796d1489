"""The pages of an HA standby (two runtime nodes on one PostgreSQL database, SPEC §8): they say
plainly that the node is the standby, name the active node and link to it, show the
configuration and the dashboard, and change nothing; once the standby takes over, they do."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from expertline.db.engine import make_engine
from expertline.web import users
from support.browser import PASSWORD, sign_in
from support.databases import postgres_database
from support.processes import ServerProcess, cli, running_server
from support.runtime_client import TWO_QUEUES_YAML
from support.wait import eventually

pytestmark = [pytest.mark.browser, pytest.mark.postgres]


class Pair:
    def __init__(self, url: str, tmp: Path, stack: ExitStack) -> None:
        self.url, self.tmp, self.stack = url, tmp, stack
        cli("--db", url, "db", "upgrade", check=True)
        (tmp / "config.yaml").write_text(TWO_QUEUES_YAML)
        cli("--db", url, "config", "import", str(tmp / "config.yaml"), check=True)
        engine = make_engine(url)
        users.create_user(engine, "ann", "admin", PASSWORD)
        users.create_user(engine, "alice", "expert", PASSWORD, expert_id="alice")
        engine.dispose()

    def node(self, name: str) -> ServerProcess:
        env = {
            "EXPERTLINE_DB": self.url,
            "EXPERTLINE_HA_LEASE_TTL": "2",
            "EXPERTLINE_HA_POLL": "0.1",
        }
        args = ("--role", "runtime", "--node", name, "--no-presence")
        return self.stack.enter_context(running_server(self.tmp, *args, env=env))


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with postgres_database() as url, ExitStack() as stack:
        yield Pair(url, tmp_path, stack)


def ready(node: ServerProcess) -> bool:
    return httpx.get(node.base_url + "/readyz", timeout=5).status_code == 200


def test_a_standby_says_so_links_to_the_active_node_and_changes_nothing(
    pair: Pair, new_page, shot
) -> None:
    a = pair.node("a")
    eventually(lambda: ready(a), timeout=20)
    b = pair.node("b")
    page = new_page()
    sign_in(page, b.base_url, "/admin/config/queues/billing", "ann")
    banner = page.locator("#standby-banner")
    expect(banner).to_contain_text("This node (b) is the standby.")
    expect(banner).to_contain_text("The active node is a")  # as soon as a's row is read
    expect(page.locator("#active-link")).to_have_attribute(
        "href", a.base_url + "/admin/config/queues/billing"
    )
    assert page.locator("#f-select").is_disabled() and page.locator("#save").count() == 0
    shot(page, "standby-queue", full_page=False)

    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    origin = {"Origin": b.base_url}
    edit = {"csrf": csrf, "id": "billing", "name": "Changed on b", "select": "true"}
    for path, form in (
        ("/admin/config/queues/billing", edit),
        ("/admin/history/1/restore", {"csrf": csrf}),
        ("/admin/config/queues/billing/delete", {"csrf": csrf}),
    ):
        refused = page.request.post(b.base_url + path, form=form, headers=origin)
        assert refused.status == 409, path
        assert "standby" in refused.text()
    page.goto(b.base_url + "/admin/history")
    assert page.locator("#versions tbody tr").count() == 1  # nothing was applied

    page.goto(b.base_url + "/admin")
    expect(page.locator("#nodes tr[data-node=a] .ha")).to_have_text("active")
    expect(page.locator("#nodes tr[data-node=b] .ha")).to_have_text("standby")
    shot(page, "standby-dashboard")

    expert = new_page()
    sign_in(expert, b.base_url, "/console", "alice")
    expect(expert.locator("#console-unavailable")).to_contain_text("Routing does not run")
    expect(expert.locator("#console-unavailable a")).to_have_attribute(
        "href", a.base_url + "/console"
    )

    a.stop(signal.SIGTERM)  # a graceful stop hands over: b becomes the active node
    eventually(lambda: ready(b), timeout=30)
    page.goto(b.base_url + "/admin/config/queues/billing")
    expect(page.locator("#standby-banner")).to_have_count(0)
    page.fill("#f-name", "Billing on b")
    page.click("#save")
    page.wait_for_url("**saved=2")
