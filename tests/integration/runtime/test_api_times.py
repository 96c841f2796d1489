"""Every instant in the API is one text form: ISO 8601 in UTC with milliseconds and ``Z``
(events and their data, offers, tasks, RCD and TCD records), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from rt_harness import Harness

INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def instants(body: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``at`` and ``*_at`` field in a JSON body, at any depth, with its path."""
    if isinstance(body, dict):
        for key, value in body.items():
            where = f"{path}.{key}"
            if key == "at" or key.endswith("_at"):
                yield where, value
            yield from instants(value, where)
    elif isinstance(body, list):
        for i, value in enumerate(body):
            yield from instants(value, f"{path}[{i}]")


def assert_one_form(body: Any) -> list[str]:
    found = [(where, value) for where, value in instants(body) if value is not None]
    bad = [(where, value) for where, value in found if not INSTANT.fullmatch(str(value))]
    assert not bad, bad
    return [where for where, _ in found]


async def test_every_api_instant_is_iso_utc_with_milliseconds_and_z(h: Harness) -> None:
    assert (await h.presence("alice", "available")).status_code == 200
    created = await h.create(caller="+15551234567")
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    (offer,) = await h.open_offers("alice")
    assert (await h.answer(offer, "accept")).status_code == 200
    assert (await h.event(task_id, "connected")).status_code == 200
    ended = await h.event(task_id, "ended")
    assert ended.status_code == 200

    fields = assert_one_form(await h.task(task_id))
    assert ".created_at" in fields and ".ended_at" in fields
    assert ".created_at" in assert_one_form(offer)

    events = await h.events(task_id=task_id)
    fields = assert_one_form(events)
    offer_created = next(e for e in events if e["type"] == "offer.created")
    assert INSTANT.fullmatch(offer_created["data"]["expires_at"])  # was POSIX seconds

    (rcd,) = await h.records("rcd")
    assert INSTANT.fullmatch(rcd["at"])  # was POSIX seconds beside the ISO "datetime"
    assert ".datetime" not in fields and INSTANT.fullmatch(rcd["datetime"])
    (tcd,) = await h.records("tcd")
    for name in ("started_at", "ended_at", "datetime"):
        assert INSTANT.fullmatch(tcd[name]), (name, tcd[name])
    assert tcd["started_at"] <= tcd["ended_at"]
    assert_one_form([rcd, tcd])

    record = (await h.events(type="task.record"))[0]["data"]
    fields = assert_one_form(record)
    assert {".created_at", ".ended_at", ".offers[0].created_at"} <= set(fields)
