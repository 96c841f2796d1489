"""A routing client and the experts, over HTTP, for tests that run real runtime processes."""

from __future__ import annotations

from typing import Any

import httpx

from support.wait import eventually

# Offers that do not time out while a process is down; carol alone serves ``support``.
TWO_QUEUES_YAML = """
attributes:
  - {name: billing, type: proficiency}
  - {name: support, type: boolean}
experts:
  - {id: alice, name: Alice, im: alice@example.test, phone: "sip:1001@pbx.example.test",
     attributes: {billing: 80}}
  - {id: bob, name: Bob, im: bob@example.test, phone: "sip:1002@pbx.example.test",
     attributes: {billing: 60}}
  - {id: carol, name: Carol, im: carol@example.test, phone: "sip:1003@pbx.example.test",
     attributes: {support: true}}
queues:
  - {id: billing, name: Billing, select: "billing >= 50", offer_to: 2, offer_timeout: 1h}
  - {id: support, name: Support, select: "support", offer_timeout: 1h}
entry_points:
  - {dialed_number: "+18005550100", queue: billing}
  - {dialed_number: "+18005550200", queue: support}
"""
EXPERTS = ("alice", "bob", "carol")


class RuntimeClient:
    def __init__(self, base_url: str, routing_client_token: str, expert_token: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.rc = {"Authorization": f"Bearer {routing_client_token}"}
        self.ex = {"Authorization": f"Bearer {expert_token}"}

    def post_task(self, **body: Any) -> httpx.Response:
        return self.http.post("/api/v1/tasks", json=body, headers=self.rc)

    def create(self, **body: Any) -> dict[str, Any]:
        r = self.post_task(**body)
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    def task(self, task_id: str) -> dict[str, Any]:
        r = self.http.get(f"/api/v1/tasks/{task_id}", headers=self.rc)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def presence(self, expert: str, status: str) -> None:
        r = self.http.put(
            f"/api/v1/experts/{expert}/presence", json={"status": status}, headers=self.ex
        )
        assert r.status_code == 200, r.text

    def offers(self, expert: str) -> list[dict[str, Any]]:
        r = self.http.get(f"/api/v1/offers?expert={expert}", headers=self.ex)
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    def accept(self, offer_id: str) -> None:
        r = self.http.post(f"/api/v1/offers/{offer_id}/accept", headers=self.ex)
        assert r.status_code == 200, r.text

    def event(self, task_id: str, type: str) -> dict[str, Any]:
        r = self.http.post(f"/api/v1/tasks/{task_id}/events", json={"type": type}, headers=self.rc)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def finish(self, task_ids: set[str] | list[str]) -> None:
        """Drive every task to its end: experts available, offers accepted, calls ended."""
        for expert in EXPERTS:
            self.presence(expert, "available")
        pending = set(task_ids)

        def step() -> bool:
            for expert in EXPERTS:
                for offer in self.offers(expert):  # a race with a withdrawal is fine here
                    self.http.post(f"/api/v1/offers/{offer['id']}/accept", headers=self.ex)
            for tid in sorted(pending):
                status = self.task(tid)["status"]
                if status == "assigned":
                    status = self.event(tid, "connected")["status"]
                if status == "connected":
                    status = self.event(tid, "ended")["status"]
                if status == "completed":
                    pending.discard(tid)
            return not pending

        eventually(step, timeout=120, interval=0.02)
