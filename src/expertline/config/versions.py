"""Configuration versions: who applied what, when, from where, and what each version changed.

Every apply or edit adds one ``config_versions`` row (actor, source, summary) and one
``config_changes`` row per added, changed or removed object, with its body before and after.
Writers serialize on a lock (PostgreSQL advisory lock; SQLite's write lock taken at the start
of the transaction) so versions are numbered without gaps.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, text, update

from expertline.db.engine import as_utc
from expertline.db.tables import config_changes, config_versions
from expertline.errors import NotFound


@dataclass(frozen=True)
class VersionInfo:
    version: int
    applied_at: datetime
    actor: str
    source: str
    summary: str
    added: int = 0
    changed: int = 0
    removed: int = 0


@dataclass(frozen=True)
class Change:
    version: int
    kind: str
    object_id: str
    op: str  # add | change | remove
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def cli_actor() -> str:
    """``cli:<os user>``: who applied a change from the command line."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = str(os.getuid())
    return f"cli:{user}"


def token_actor(name: str) -> str:
    return f"token:{name}"


def current_version(engine: Engine) -> int:
    """The applied configuration version; 0 before the first apply."""
    with engine.connect() as conn:
        return version_of(conn)


def version_of(conn: Connection) -> int:
    return int(
        conn.execute(select(func.coalesce(func.max(config_versions.c.version), 0))).scalar_one()
    )


def history(engine: Engine, limit: int = 50, before: int | None = None) -> list[VersionInfo]:
    """Applied versions, newest first; ``before`` pages back (versions lower than it)."""
    limit = max(1, min(limit, 1000))
    query = select(config_versions).order_by(config_versions.c.version.desc()).limit(limit)
    if before is not None:
        query = query.where(config_versions.c.version < before)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        if not rows:
            return []
        counts: dict[tuple[int, str], int] = {
            (v, op): n
            for v, op, n in conn.execute(
                select(config_changes.c.version, config_changes.c.op, func.count())
                .where(config_changes.c.version.in_([r.version for r in rows]))
                .group_by(config_changes.c.version, config_changes.c.op)
            )
        }
    return [
        VersionInfo(
            version=r.version,
            applied_at=as_utc(r.applied_at),
            actor=r.actor,
            source=r.source,
            summary=r.summary,
            added=counts.get((r.version, "add"), 0),
            changed=counts.get((r.version, "change"), 0),
            removed=counts.get((r.version, "remove"), 0),
        )
        for r in rows
    ]


def changes(engine: Engine, version: int, limit: int = 1000) -> list[Change]:
    """What one version changed, object by object (with bodies before and after)."""
    with engine.connect() as conn:
        exists = conn.execute(
            select(config_versions.c.version).where(config_versions.c.version == version)
        ).first()
        if exists is None:
            raise NotFound(f"no configuration version {version}")
        rows = conn.execute(
            select(config_changes)
            .where(config_changes.c.version == version)
            .order_by(config_changes.c.id)
            .limit(limit)
        ).all()
    return [Change(r.version, r.kind, r.object_id, r.op, r.before, r.after) for r in rows]


_PG_LOCK_KEY = 0x6578_6C63  # "exlc": configuration writers


def lock_writers(conn: Connection) -> None:
    """Serialize configuration writers for the rest of this transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    else:
        # A write statement first takes SQLite's write lock (waiting up to busy_timeout)
        # before anything is read, so the read below cannot go stale.
        conn.execute(
            update(config_versions)
            .where(config_versions.c.version == -1)
            .values(version=config_versions.c.version)
        )


def new_version(conn: Connection, version: int, actor: str, source: str, summary: str) -> int:
    """Record the version after ``version`` (who, from where, what) and return it."""
    new = version + 1
    conn.execute(
        insert(config_versions).values(
            version=new,
            applied_at=datetime.now(UTC),
            actor=actor[:255],
            source=source[:64],
            summary=summary,
        )
    )
    return new


Key = tuple[str, str]


def describe_changes(added: list[Key], changed: list[Key], removed: list[Key]) -> str:
    """``added expert alice; changed queue billing`` or, for bulk, counts per kind."""
    parts = []
    for word, keys in (("added", added), ("changed", changed), ("removed", removed)):
        if not keys:
            continue
        if len(keys) <= 3:
            parts.append(f"{word} " + ", ".join(f"{k.replace('_', ' ')} {o}" for k, o in keys))
        else:
            counts: dict[str, int] = {}
            for kind, _ in keys:
                counts[kind] = counts.get(kind, 0) + 1
            parts.append(
                f"{word} " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
            )
    return "; ".join(parts)
