"""``/admin`` configuration pages in Chromium against a real node: sign-in, a queue created
with a bad CEL selection (the error shows at the field as it is typed, and again on save),
fixed, saved as a new version and reverted; a supervisor sees and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from expertline.web import users
from support.browser import PASSWORD, sign_in
from support.processes import ServerProcess
from support.runtime_client import TWO_QUEUES_YAML
from support.sqlite_node import configured_sqlite, serving

pytestmark = pytest.mark.browser


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServerProcess]:
    url, engine = configured_sqlite(tmp_path, TWO_QUEUES_YAML)
    users.create_user(engine, "ann", "admin", PASSWORD)
    users.create_user(engine, "sam", "supervisor", PASSWORD)
    engine.dispose()
    with serving(tmp_path, url, "--no-presence") as server:
        yield server


def test_an_admin_creates_fixes_and_reverts_a_queue(node: ServerProcess, new_page, shot) -> None:
    page = new_page()
    page.goto(node.base_url + "/admin/config/queues")
    assert "/sign-in?next=" in page.url
    shot(page, "sign-in")
    page.fill("#username", "ann")
    page.fill("#password", "not the password")
    page.click("#sign-in-password")
    assert "do not match" in page.locator("#sign-in-error").inner_text()
    page.fill("#password", PASSWORD)
    page.click("#sign-in-password")
    page.wait_for_url("**/admin/config/queues")
    assert page.locator("#objects tbody tr").count() == 2
    shot(page, "queues")

    page.click("#new-object")
    page.fill("#f-id", "vip")
    page.fill("#f-name", "VIP line")
    page.fill("#f-select", "billing >= ")  # not CEL
    error = page.locator("#e-select")
    expect(error).to_contain_text("Syntax error")  # as typed, before any save
    expect(page.locator("#f-select")).to_have_attribute("aria-invalid", "true")
    page.fill("#f-select", "billing >= 'high'")  # CEL, but no boolean of a number and text
    expect(error).not_to_contain_text("Syntax error")
    expect(error).to_contain_text("no matching overload")
    shot(page, "queue-bad-cel", full_page=False)
    page.click("#save")
    page.wait_for_load_state()
    assert error.inner_text() != ""  # refused on save too, at the same field
    assert page.get_attribute("#f-select", "aria-invalid") == "true"

    page.fill("#f-select", "billing >= 90")
    expect(page.locator("#check-state")).to_have_text("No problems found.")
    expect(error).to_have_text("")
    page.click("#save")
    page.wait_for_url("**/admin/config/queues/vip?saved=2")
    assert "version 2" in page.locator("#saved").inner_text()

    page.click("nav >> text=History")
    top = page.locator("#versions tbody tr").first
    assert top.get_attribute("data-version") == "2"
    assert top.locator(".actor").inner_text() == "web:ann"
    page.click("#versions tr[data-version='2'] a")
    assert page.locator("#version-actor").inner_text() == "web:ann"
    assert page.locator(".change[data-op=add][data-object=vip]").count() == 1
    shot(page, "version")
    page.click("#undo")
    page.wait_for_url("**/admin/history?reverted=3")
    assert "version 3" in page.locator("#reverted").inner_text()
    page.goto(node.base_url + "/admin/config/queues")
    assert page.locator("#objects tbody tr[data-id=vip]").count() == 0
    with node.client() as http:
        assert http.get("/admin/config/queues/vip", follow_redirects=False).status_code == 303


def test_a_supervisor_sees_the_configuration_and_changes_nothing(
    node: ServerProcess, new_page, shot
) -> None:
    page = new_page()
    sign_in(page, node.base_url, "/admin/config/queues/billing", "sam")
    assert page.locator("#f-select").is_disabled()
    assert page.locator("#save").count() == 0 and page.locator("#delete").count() == 0
    shot(page, "supervisor-queue")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    refused = page.request.post(
        node.base_url + "/admin/config/queues/billing",
        form={"csrf": csrf, "id": "billing", "name": "Changed", "select": "true"},
        headers={"Origin": node.base_url},
    )
    assert refused.status == 403
    refused = page.request.post(
        node.base_url + "/admin/history/1/restore",
        form={"csrf": csrf},
        headers={"Origin": node.base_url},
    )
    assert refused.status == 403
    page.goto(node.base_url + "/admin/history")
    assert page.locator("#versions tbody tr").count() == 1  # nothing was applied
    assert page.locator("#versions button").count() == 0


def test_a_form_from_elsewhere_is_refused(node: ServerProcess, new_page) -> None:
    page = new_page()
    sign_in(page, node.base_url, "/admin/config/queues/billing", "ann")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    body = {"id": "billing", "name": "Forged", "select": "true"}
    forged = page.request.post(
        node.base_url + "/admin/config/queues/billing",
        form={**body, "csrf": "not-the-token"},
        headers={"Origin": node.base_url},
    )
    assert forged.status == 403
    elsewhere = page.request.post(
        node.base_url + "/admin/config/queues/billing",
        form={**body, "csrf": csrf},
        headers={"Origin": "http://attacker.example"},
    )
    assert elsewhere.status == 403
    page.reload()
    assert page.input_value("#f-name") == "Billing"


def test_the_check_shows_a_fields_own_problem_and_the_documents_at_once(
    node: ServerProcess, new_page
) -> None:
    # A bad duration (the queue's own check) does not hide the bad CEL (the document's check).
    page = new_page()
    sign_in(page, node.base_url, "/admin/config/queues", "ann")
    page.click("#new-object")
    page.fill("#f-id", "vip")
    page.fill("#f-name", "VIP line")
    page.fill("#f-offer_timeout", "soon")
    page.fill("#f-select", "billing >= 'high'")
    expect(page.locator("#e-offer_timeout")).to_contain_text("bad duration")
    expect(page.locator("#e-select")).to_contain_text("no matching overload")
