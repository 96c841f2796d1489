"""Rows as the runtime's store writes them, for tests that write batches directly."""

from __future__ import annotations

from typing import Any


def task_row(**values: Any) -> dict[str, Any]:
    """A ``runtime_tasks`` row of a queued HTTP task ``t1``; ``values`` replace columns."""
    row: dict[str, Any] = {
        "task_id": "t1",
        "code": "1234",
        "external_id": None,
        "status": "queued",
        "active": True,
        "queue_id": "q",
        "expert_id": None,
        "label": None,
        "origin": "http",
        "callback_url": None,
        "created_at": 1_795_000_000.0,
        "updated_at": 1_795_000_000.0,
        "state": {"caller": "+1"},
    }
    row.update(values)
    return row
