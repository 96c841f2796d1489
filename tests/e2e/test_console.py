"""The expert console (``/console``) in Chromium against a real node: an expert signs in, goes
available, sees an offer arrive with its countdown and the attributes the queue shows, accepts
it, and the routing client gets that expert's label; another expert cannot answer it (403,
through the REST channel and through the console), and an offer another expert won is
withdrawn from the console at once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from expertline.security.tokens import create_token
from expertline.web import users
from support.browser import PASSWORD, sign_in, sign_in_with_token
from support.processes import ServerProcess
from support.sqlite_node import configured_sqlite, serving
from support.wait import eventually

pytestmark = pytest.mark.browser

CONFIG = """
attributes:
  - {name: billing, type: proficiency}
experts:
  - {id: alice, name: Alice Ng, phone: "sip:1001@pbx.example.test", attributes: {billing: 80}}
  - {id: bob, name: Bob Roy, phone: "sip:1002@pbx.example.test", attributes: {billing: 60}}
queues:
  - {id: billing, name: Billing, select: "billing >= 50", offer_to: 2, offer_timeout: 5m,
     show: {caller: masked, account: visible, notes: hidden}}
"""


class Node:
    def __init__(self, server: ServerProcess, tokens: dict[str, str]) -> None:
        self.server = server
        self.base_url = server.base_url
        self.tokens = tokens

    def api(self, who: str) -> object:
        return self.server.client(self.tokens[who])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    url, engine = configured_sqlite(tmp_path, CONFIG)
    users.create_user(engine, "alice", "expert", PASSWORD, expert_id="alice")
    tokens = {
        "cc": create_token(engine, "cc", "routing-client"),
        "bob": create_token(engine, "bob-phone", "expert", "bob"),
    }
    engine.dispose()
    with serving(tmp_path, url, "--no-presence") as server:
        yield Node(server, tokens)


def test_an_expert_answers_offers_in_the_console(node: Node, new_page, shot) -> None:
    page = new_page()
    sign_in(page, node.base_url, "/console", "alice")
    assert page.url.endswith("/console")
    expect(page.locator("#expert-state")).to_have_text("offline")
    shot(page, "signed-in")
    page.click("#presence-available")
    expect(page.locator("#console-message")).to_have_text("You are now available.")
    expect(page.locator("#presence-available")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#expert-state")).to_have_text("available")

    with node.api("cc") as cc:
        r = cc.post(
            "/api/v1/tasks",
            json={
                "queue": "billing",
                "caller": "+15551234567",
                "attributes": {"account": "AC-778", "notes": "secret"},
            },
        )
        assert r.status_code == 201, r.text
        task = r.json()
    card = page.locator("[data-offer]")
    expect(card).to_have_count(1)  # pushed to the page, no reload
    offer_id = card.get_attribute("data-offer")
    expect(card.locator("h3")).to_have_text(f"Offer #{task['code']} · Billing")
    expect(card.locator(".caller")).to_have_text("****4567")  # masked: the last four shown
    expect(card.locator(".countdown")).to_have_text(re.compile(r"^\d+ s left$"))
    assert "AC-778" in card.locator("dl").inner_text()
    assert "secret" not in card.inner_text()  # hidden by the queue
    shot(page, "offer")

    with node.api("bob") as bob:  # another expert's token: refused, nothing changes
        assert bob.get("/api/v1/offers", params={"expert": "alice"}).status_code == 403
        refused = bob.post(f"/api/v1/offers/{offer_id}/accept")
        assert refused.status_code == 403, refused.text
    bob_page = new_page()
    sign_in_with_token(bob_page, node.base_url, "/console", node.tokens["bob"])
    expect(bob_page.locator("[data-offer]")).to_have_count(0)  # bob is offline: no offer
    bob_csrf = bob_page.locator("input[name=csrf]").first.get_attribute("value")
    refused = bob_page.request.post(
        f"{node.base_url}/console/offers/{offer_id}/accept",
        form={"csrf": bob_csrf},
        headers={"Origin": node.base_url, "Accept": "application/json"},
    )
    assert refused.status == 403

    card.locator("button.accept").click()
    expect(page.locator("#console-message")).to_have_text(f"Accepted #{task['code']}.")
    with node.api("cc") as cc:
        done = cc.get(f"/api/v1/tasks/{task['id']}").json()
    assert (done["status"], done["expert"], done["label"]) == (
        "assigned",
        "alice",
        "sip:1001@pbx.example.test",
    )
    expect(page.locator(f".task[data-task='{task['id']}']")).to_contain_text("assigned")
    expect(page.locator("#expert-state")).to_have_text("busy")
    shot(page, "task")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "task-phone")

    with node.api("cc") as cc:
        assert cc.post(f"/api/v1/tasks/{task['id']}/events", json={"type": "ended"}).is_success
    expect(page.locator("#expert-state")).to_have_text("available")

    # First yes wins: bob takes the next task; alice's offer is withdrawn at once.
    with node.api("bob") as bob:
        assert bob.put("/api/v1/experts/bob/presence", json={"status": "available"}).is_success
    with node.api("cc") as cc:
        second = cc.post("/api/v1/tasks", json={"queue": "billing"}).json()
    expect(page.locator("[data-offer]")).to_have_count(1)
    alice_offer = page.locator("[data-offer]").get_attribute("data-offer")
    with node.api("bob") as bob:
        bobs = eventually(
            lambda: bob.get("/api/v1/offers", params={"expert": "bob"}).json()["items"]
        )
        assert bob.post(f"/api/v1/offers/{bobs[0]['id']}/accept").status_code == 200
    expect(page.locator("[data-offer]")).to_have_count(0)
    expect(page.locator("#console-message")).to_contain_text("withdrawn")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    late = page.request.post(
        f"{node.base_url}/console/offers/{alice_offer}/accept",
        form={"csrf": csrf},
        headers={"Origin": node.base_url, "Accept": "application/json"},
    )
    assert late.status == 409 and "no longer open" in late.json()["message"]
    with node.api("cc") as cc:
        assert cc.get(f"/api/v1/tasks/{second['id']}").json()["expert"] == "bob"
