"""The backup archive's format: its members, limits, summary, errors, and how values are written."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import JSON, DateTime, LargeBinary, MetaData

from expertline.db import tables as runtime_tables
from expertline.db.engine import as_utc
from expertline.db.migrate import RUNTIME, MigrationChain
from expertline.errors import ExpertlineError
from expertline.reporting import migrate as reporting_migrate
from expertline.reporting import tables as reporting_tables

FORMAT = "expertline-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
INSERT_ROWS = 1000  # rows per INSERT while restoring
KINDS = frozenset({"time", "json", "bytes", "plain"})  # how a column's values are written
# State of the running nodes, not data: its migration makes it afresh (a restored database
# starts with the HA lease free, nobody signed in to the pages, no node known).
NODE_STATE = frozenset({"ha_lease", "web_sessions", "web_nodes"})
CHAINS: tuple[tuple[MigrationChain, MetaData], ...] = (
    (RUNTIME, runtime_tables.metadata),
    (reporting_migrate.CHAIN, reporting_tables.metadata),
)


class BackupError(ExpertlineError):
    """An archive that cannot be made, read, trusted or restored; nothing was changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, [], "backup", 400)


@dataclass(frozen=True)
class TableSummary:
    name: str
    rows: int


@dataclass(frozen=True)
class Summary:
    path: Path
    created_at: str
    dialect: str
    revisions: dict[str, str]  # chain label -> revision
    tables: list[TableSummary]
    size: int

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


MAX_LINE = 64 << 20  # bytes of one row: the largest request body the API takes, with room
MAX_MANIFEST = 16 << 20  # the manifest lists tables and columns: a few kilobytes
MAX_SUMS = 1 << 20


def column_kind(column: Any) -> str:
    """How a column's values are written: ``time``, ``json``, ``bytes`` or ``plain``."""
    if isinstance(column.type, DateTime):
        return "time"
    if isinstance(column.type, JSON):
        return "json"
    if isinstance(column.type, LargeBinary):
        return "bytes"
    return "plain"


def encode_value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return as_utc(value).astimezone(UTC).isoformat()
    if kind == "json":
        return [value]
    if kind == "bytes":
        return base64.b64encode(value).decode("ascii")
    return value


def decode_value(kind: str, value: Any) -> Any:
    """A value as written by ``encode_value``; ValueError or TypeError when it is not one."""
    if value is None:
        return None  # SQL NULL (JSON columns are loaded with none_as_null)
    if kind == "time":
        if not isinstance(value, str):
            raise TypeError("not text")
        return as_utc(datetime.fromisoformat(value))
    if kind == "json":
        if not isinstance(value, list) or len(value) != 1:
            raise ValueError("not a one-value list")
        return JSON.NULL if value[0] is None else value[0]
    if kind == "bytes":
        return base64.b64decode(value, validate=True)
    if isinstance(value, dict | list):
        raise TypeError("not a plain value")
    return value


KIND_WORDS = {
    "time": "time (ISO 8601)",
    "json": "JSON value in a list",
    "bytes": "base64 text",
    "plain": "number, text or boolean",
}


def known_revision(chain: MigrationChain, revision: str) -> None:
    scripts = ScriptDirectory(str(chain.scripts))
    try:
        known = scripts.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise BackupError(
            f"{chain.label} revision {revision!r} is unknown to this release (made by a newer "
            "one?): restore it with that release or a later one"
        )


def summary(path: Path, manifest: dict[str, Any]) -> Summary:
    return Summary(
        path,
        manifest["created_at"],
        manifest["dialect"],
        dict(manifest["revisions"]),
        [TableSummary(t["name"], t["rows"]) for t in manifest["tables"]],
        path.stat().st_size,
    )
