"""Backups: a consistent, checksummed archive of an expertline database (SPEC §8).

``create`` reads every table of each schema chain present in the database (the runtime's and,
where it lives in the same database, the reporting schema) inside one read-only snapshot
transaction, so the archive is consistent while nodes keep writing. ``verify`` checks an
archive without a database. ``restore`` loads one into an empty database, SQLite or
PostgreSQL whichever the archive came from, then upgrades it to this release's schema.

The archive is a gzip-compressed tar file:

- ``manifest.json``: format, creation time, release, source dialect, each chain's revision,
  and for each table its columns (with how values are written), row count and member name;
- ``tables/<table>.jsonl``: one JSON array per row, in primary-key order;
- ``SHA256SUMS``: the SHA-256 of every other member, in ``sha256sum`` format, so an extracted
  archive can also be checked with ``sha256sum -c SHA256SUMS``.

Values are written by column type: times as ISO 8601 in UTC, JSON columns as ``[value]`` (and
SQL NULL as ``null``, so a JSON ``null`` and a missing value stay apart), everything else as
its JSON value.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Engine,
    LargeBinary,
    MetaData,
    Table,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

from expertline import __version__
from expertline.db import tables as runtime_tables
from expertline.db.engine import as_utc
from expertline.db.migrate import RUNTIME, MigrationChain, first_line
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


# --- values --------------------------------------------------------------------------------


def _kind(column: Any) -> str:
    """How a column's values are written: ``time``, ``json``, ``bytes`` or ``plain``."""
    if isinstance(column.type, DateTime):
        return "time"
    if isinstance(column.type, JSON):
        return "json"
    if isinstance(column.type, LargeBinary):
        return "bytes"
    return "plain"


def _encode(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return as_utc(value).astimezone(UTC).isoformat()
    if kind == "json":
        return [value]
    if kind == "bytes":
        return base64.b64encode(value).decode("ascii")
    return value


def _decode(kind: str, value: Any) -> Any:
    if value is None:
        return None  # SQL NULL (JSON columns are loaded with none_as_null)
    if kind == "time":
        return datetime.fromisoformat(value)
    if kind == "json":
        return JSON.NULL if value[0] is None else value[0]
    if kind == "bytes":
        return base64.b64decode(value)
    return value


# --- create --------------------------------------------------------------------------------


def create(engine: Engine, path: Path) -> Summary:
    """Write a backup of the database behind ``engine`` to ``path`` (replaced atomically)."""
    try:
        return _create(engine, Path(path))
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot read the database: {first_line(exc)}") from exc


def _create(engine: Engine, path: Path) -> Summary:
    if not path.parent.is_dir():
        raise BackupError(f"{path.parent}: no such directory")
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staging = Path(tmp)
        with _snapshot(engine) as conn:  # held only while the tables are read
            revisions, entries = _dump(conn, staging)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": created_at,
            "release": __version__,
            "dialect": engine.dialect.name,
            "revisions": revisions,
            "tables": entries,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        members = [(MANIFEST, staging / MANIFEST)]
        members += [(e["member"], staging / e["member"]) for e in entries]
        (staging / SUMS).write_text(
            "".join(f"{_sha256_file(staged)}  {name}\n" for name, staged in members)
        )
        members.append((SUMS, staging / SUMS))
        _write_archive(members, staging / "archive.partial", path)
    return _summary(path, manifest)


def _dump(conn: Connection, staging: Path) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Write each table of each chain present to ``staging/tables/``; returns the chains'
    revisions and the manifest's table entries."""
    chains = _present_chains(conn)
    if not chains:
        raise BackupError("the database holds no expertline schema: nothing to back up")
    (staging / "tables").mkdir()
    entries: list[dict[str, Any]] = []
    for chain, _revision, names in chains:
        reflected = MetaData()
        reflected.reflect(conn, only=names)
        for name in names:
            table = reflected.tables[name]
            member = f"tables/{name}.jsonl"
            entries.append(
                {
                    "name": name,
                    "chain": chain.label,
                    "member": member,
                    "rows": _dump_table(conn, table, staging / member),
                    "columns": [[c.name, _kind(c)] for c in table.columns],
                }
            )
    return {chain.label: revision for chain, revision, _ in chains}, entries


def _write_archive(members: list[tuple[str, Path]], partial: Path, path: Path) -> None:
    """Tar and gzip the staged ``members`` into ``partial``, sync it, and rename it to
    ``path``: a reader never sees half an archive under the final name."""
    with open(partial, "wb") as raw:
        os.fchmod(raw.fileno(), 0o600)  # the archive holds every row, token hashes included
        with (
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name, staged in members:
                info = tar.gettarinfo(str(staged), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o600
                with open(staged, "rb") as f:
                    tar.addfile(info, f)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, path)


@contextlib.contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection in one read-only transaction that sees one consistent state."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                conn.execute(text("SET TRANSACTION READ ONLY"))
                yield conn
        else:  # SQLite: BEGIN, then the first read fixes the snapshot (WAL)
            with conn.begin():
                yield conn


def _present_chains(conn: Connection) -> list[tuple[MigrationChain, str, list[str]]]:
    """The chains whose schema is in this database: (chain, revision, table names)."""
    existing = set(conn.dialect.get_table_names(conn))
    found = []
    for chain, declared in CHAINS:
        revision = chain.revision(conn)
        if revision is None:
            continue
        _known_revision(chain, revision)
        names = [  # parents first
            t.name
            for t in declared.sorted_tables
            if t.name in existing and t.name not in NODE_STATE
        ]
        found.append((chain, revision, names))
    return found


def _dump_table(conn: Connection, table: Table, target: Path) -> int:
    kinds = [_kind(c) for c in table.columns]
    order = list(table.primary_key.columns) or list(table.columns)
    rows = 0
    with open(target, "w", encoding="utf-8") as out:
        result = conn.execution_options(yield_per=2000).execute(select(table).order_by(*order))
        for row in result:
            encoded = [_encode(k, v) for k, v in zip(kinds, row, strict=True)]
            out.write(json.dumps(encoded, ensure_ascii=False, separators=(",", ":")))
            out.write("\n")
            rows += 1
    return rows


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- verify --------------------------------------------------------------------------------


def verify(path: Path) -> Summary:
    """Check an archive: readable, every member's checksum and row count, a known format and
    schema revisions this release can restore. Raises BackupError naming what is wrong."""
    with _open(path) as tar:
        manifest = _check(tar)
    return _summary(Path(path), manifest)


@contextlib.contextmanager
def _open(path: Path) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            yield tar
    except FileNotFoundError:
        raise BackupError(f"{path}: no such file") from None
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError) as exc:
        raise BackupError(f"{path}: not a readable backup archive ({exc})") from None


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    try:
        f = tar.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise BackupError(f"the archive has no {name}")
    return f


def _check(tar: tarfile.TarFile) -> dict[str, Any]:
    """The manifest, once every member matches SHA256SUMS and the manifest's row counts."""
    sums: dict[str, str] = {}
    for line in _member(tar, SUMS).read().decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise BackupError(f"{SUMS} has a malformed line: {line[:80]!r}")
        sums[name] = digest
    names = {m.name for m in tar.getmembers() if m.isfile()} - {SUMS}
    if names != set(sums):
        odd = sorted(names ^ set(sums))
        raise BackupError(f"the archive's members and {SUMS} disagree: {', '.join(odd)}")
    lines: dict[str, int] = {}
    for name, expected in sums.items():
        digest, count = _digest_member(_member(tar, name))
        if digest != expected:
            raise BackupError(f"{name} is damaged: its SHA-256 differs from {SUMS}")
        lines[name] = count
    try:
        manifest = json.loads(_member(tar, MANIFEST).read())
    except ValueError as exc:
        raise BackupError(f"{MANIFEST} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError("not an expertline backup (its manifest names another format)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"backup format version {manifest.get('format_version')!r}; this release reads "
            f"version {FORMAT_VERSION}"
        )
    try:
        _check_contents(manifest, lines)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise BackupError(f"{MANIFEST} is malformed ({exc!r})") from None
    return manifest


def _check_contents(manifest: dict[str, Any], lines: dict[str, int]) -> None:
    """Schemas this release knows, tables of those schemas, members of the counted rows."""
    chains = {chain.label: (chain, declared) for chain, declared in CHAINS}
    for label, revision in manifest["revisions"].items():
        if label not in chains:
            raise BackupError(f"the archive holds a schema this release does not know: {label}")
        _known_revision(chains[label][0], revision)
    for entry in manifest["tables"]:
        name, chain = entry["name"], chains[entry["chain"]]
        if entry["chain"] not in manifest["revisions"] or name not in chain[1].tables:
            raise BackupError(f"table {name!r} is not part of the {entry['chain']}")
        if lines.get(entry["member"]) != entry["rows"]:
            raise BackupError(
                f"{entry['member']} holds {lines.get(entry['member'])} rows, the manifest says "
                f"{entry['rows']}"
            )
        for column, kind in entry["columns"]:
            if kind not in KINDS or not isinstance(column, str):
                raise BackupError(f"table {name}: column {column!r} of unknown kind {kind!r}")


def _digest_member(f: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    count = 0
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
        count += block.count(b"\n")
    return digest.hexdigest(), count


def _known_revision(chain: MigrationChain, revision: str) -> None:
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


def _summary(path: Path, manifest: dict[str, Any]) -> Summary:
    return Summary(
        path,
        manifest["created_at"],
        manifest["dialect"],
        dict(manifest["revisions"]),
        [TableSummary(t["name"], t["rows"]) for t in manifest["tables"]],
        path.stat().st_size,
    )


# --- restore -------------------------------------------------------------------------------


def restore(engine: Engine, path: Path) -> Summary:
    """Load the archive at ``path`` into the empty database behind ``engine``, then bring its
    schema to this release. The archive is verified first; a refusal changes nothing, and the
    rows go in in one transaction, all or none."""
    try:
        return _restore(engine, Path(path))
    except SQLAlchemyError as exc:
        raise BackupError(f"the database refused the restore: {first_line(exc)}") from exc


def _restore(engine: Engine, path: Path) -> Summary:
    with _open(path) as tar:
        manifest = _check(tar)
        chains = {chain.label: chain for chain, _ in CHAINS}
        _require_empty(engine, manifest)
        for label, revision in manifest["revisions"].items():
            chains[label].upgrade(engine, revision)  # the schema the rows were read from
        names = [entry["name"] for entry in manifest["tables"]]
        with engine.begin() as conn:
            reflected = MetaData()
            reflected.reflect(conn, only=names)
            for entry in manifest["tables"]:  # in the archive's order: parents first
                table = reflected.tables[entry["name"]]
                _load_table(conn, table, entry, _member(tar, entry["member"]))
            if conn.dialect.name == "postgresql":
                _advance_sequences(conn, names)
        for label in manifest["revisions"]:
            chains[label].upgrade(engine, "head")
    return _summary(Path(path), manifest)


def _require_empty(engine: Engine, manifest: dict[str, Any]) -> None:
    with engine.connect() as conn:
        existing = set(conn.dialect.get_table_names(conn))
        for chain, declared in CHAINS:
            current = chain.revision(conn)
            wanted = manifest["revisions"].get(chain.label)
            if current is not None and wanted is not None and current != wanted:
                raise BackupError(
                    f"restore needs an empty database: its {chain.label} is at revision "
                    f"{current}, the archive's is {wanted}"
                )
            for table in declared.sorted_tables:
                if (
                    table.name in existing
                    and table.name not in NODE_STATE
                    and conn.execute(select(func.count()).select_from(table)).scalar()
                ):
                    raise BackupError(
                        f"restore needs an empty database: table {table.name} has rows"
                    )


def _load_table(conn: Connection, table: Table, entry: dict[str, Any], rows: IO[bytes]) -> None:
    columns = entry["columns"]
    present = {c.name for c in table.columns}
    missing = [name for name, _ in columns if name not in present]
    if missing:
        raise BackupError(f"table {table.name} has no column {', '.join(missing)} at this revision")
    for column in table.columns:
        if isinstance(column.type, JSON):
            column.type.none_as_null = True  # None is SQL NULL; a JSON null comes as JSON.NULL
    batch: list[dict[str, Any]] = []
    statement = insert(table)
    for line in io.TextIOWrapper(rows, encoding="utf-8"):
        values = json.loads(line)
        batch.append(
            {name: _decode(kind, v) for (name, kind), v in zip(columns, values, strict=True)}
        )
        if len(batch) >= INSERT_ROWS:
            conn.execute(statement, batch)
            batch = []
    if batch:
        conn.execute(statement, batch)


def _advance_sequences(conn: Connection, names: list[str]) -> None:
    """Explicit ids leave PostgreSQL's sequences behind: move each past its column's maximum."""
    for name in names:
        for column in conn.dialect.get_columns(conn, name):
            sequence = conn.execute(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": name, "c": column["name"]}
            ).scalar()
            if sequence is None:
                continue
            conn.execute(
                text(
                    f'SELECT setval(:s, COALESCE((SELECT max("{column["name"]}") FROM "{name}"), 0) + 1, false)'
                ),
                {"s": sequence},
            )
