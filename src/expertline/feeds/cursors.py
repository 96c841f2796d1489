"""Durable cursors of the record feeds: the last recovery key each target acknowledged.

Kept in ``runtime_meta`` under ``record_feed:<target id>:<kind>`` (a number), in the
database the runtime writes, so a restart or a failover to the other node resumes where the
target left off instead of starting over. Only the active node's lanes write them. A save is
one ``UPDATE`` (an ``INSERT`` the first time): on SQLite a read before the write would hold a
shared lock that the runtime's writer process could make fail at once instead of waiting.
"""

from __future__ import annotations

from sqlalchemy import Engine, insert, select, update

from expertline.db.tables import runtime_meta

PREFIX = "record_feed:"


def key(target_id: str, kind: str) -> str:
    return f"{PREFIX}{target_id}:{kind}"


def load(engine: Engine, target_id: str) -> dict[str, int]:
    """The target's cursors by kind (a kind not there yet: from the beginning)."""
    start = key(target_id, "")
    with engine.connect() as conn:
        rows = conn.execute(
            select(runtime_meta.c.key, runtime_meta.c.value).where(
                runtime_meta.c.key.startswith(start, autoescape=True)
            )
        ).all()
    return {k[len(start) :]: int(v) for k, v in rows if isinstance(v, int)}


def save(engine: Engine, target_id: str, kind: str, after: int) -> None:
    """Move the target's cursor of ``kind`` to ``after``."""
    name = key(target_id, kind)
    with engine.begin() as conn:
        done = conn.execute(
            update(runtime_meta).where(runtime_meta.c.key == name).values(value=after)
        )
        if done.rowcount == 0:
            conn.execute(insert(runtime_meta).values(key=name, value=after))
