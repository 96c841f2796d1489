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
import binascii
import contextlib
import gzip
import hashlib
import json
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
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
from expertline.errors import ExpertlineError, clip
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
    """A value as written by ``_encode``; ValueError or TypeError when it is not one."""
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


MAX_LINE = 64 << 20  # bytes of one row: the largest request body the API takes, with room
MAX_MANIFEST = 16 << 20  # the manifest lists tables and columns: a few kilobytes
MAX_SUMS = 1 << 20
_TABLE_MEMBER = re.compile(r"tables/[a-z][a-z0-9_]{0,62}\.jsonl")


def verify(path: Path) -> Summary:
    """Check an archive as restore will read it: readable, only plain members with expected
    names, every member's checksum and row count, a known format and schema revisions, and
    every row (JSON, one value per column, times, JSON and bytes values that decode). Raises
    BackupError naming the first thing wrong."""
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
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError, zlib.error) as exc:
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
    """The manifest, once every member and every row is as restore needs it."""
    members = _members(tar)
    sums = _sums(_read_small(tar, members, SUMS, MAX_SUMS))
    if set(members) - {SUMS} != set(sums):
        odd = sorted(set(members) - {SUMS} ^ set(sums))
        raise BackupError(f"the archive's members and {SUMS} disagree: {', '.join(odd)}")
    raw = _read_small(tar, members, MANIFEST, MAX_MANIFEST)
    if hashlib.sha256(raw).hexdigest() != sums[MANIFEST]:
        raise BackupError(f"{MANIFEST} is damaged: its SHA-256 differs from {SUMS}")
    manifest = _parse_manifest(raw)
    listed = {entry["member"] for entry in manifest["tables"]}
    unlisted = sorted(set(sums) - listed - {MANIFEST})
    if unlisted:
        raise BackupError(f"the manifest lists no table for {', '.join(unlisted)}")
    for entry in manifest["tables"]:
        _check_rows(entry, _member(tar, entry["member"]), sums[entry["member"]])
    return manifest


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """The members by name: each a regular file named as ``create`` names them (never a
    link, a device, an absolute path or one that climbs out with ``..``)."""
    found: dict[str, tarfile.TarInfo] = {}
    for m in tar.getmembers():
        shown = repr(m.name[:80])
        if m.name.startswith("/") or ".." in PurePosixPath(m.name).parts:
            raise BackupError(f"the archive has a member outside it: {shown}")
        if not m.isreg():
            kind = "link" if m.issym() or m.islnk() else "device" if m.isdev() else "directory"
            raise BackupError(f"the archive has a {kind} where only files belong: {shown}")
        if m.name not in (MANIFEST, SUMS) and not _TABLE_MEMBER.fullmatch(m.name):
            raise BackupError(f"the archive has a member a backup never has: {shown}")
        if m.name in found:
            raise BackupError(f"the archive has {shown} twice")
        found[m.name] = m
    return found


def _read_small(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str, limit: int
) -> bytes:
    if name not in members:
        raise BackupError(f"the archive has no {name}")
    if members[name].size > limit:
        raise BackupError(f"{name} is {members[name].size:,} bytes; a backup's is under {limit:,}")
    return _member(tar, name).read()


def _sums(raw: bytes) -> dict[str, str]:
    sums: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise BackupError(f"{SUMS} has a malformed line: {line[:80]!r}")
        sums[name] = digest
    return sums


def _parse_manifest(raw: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise BackupError(f"{MANIFEST} is not JSON: {reason}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError("not an expertline backup (its manifest names another format)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"backup format version {clip(manifest.get('format_version'))}; this release "
            f"reads version {FORMAT_VERSION}"
        )
    try:
        _check_contents(manifest)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise BackupError(f"{MANIFEST} is malformed ({clip(exc)})") from None
    return manifest


def _check_contents(manifest: dict[str, Any]) -> None:
    """Schemas this release knows, tables of those schemas with well-formed columns, and
    what the summary shows."""
    for key in ("created_at", "dialect"):
        if not isinstance(manifest[key], str):
            raise TypeError(f"{key} is not text")
    chains = {chain.label: (chain, declared) for chain, declared in CHAINS}
    for label, revision in manifest["revisions"].items():
        if label not in chains:
            raise BackupError(
                f"the archive holds a schema this release does not know: {clip(label)}"
            )
        if not isinstance(revision, str):
            raise TypeError(f"the revision of {label} is not text")
        _known_revision(chains[label][0], revision)
    seen: set[str] = set()
    for entry in manifest["tables"]:
        name, chain = entry["name"], chains[entry["chain"]]
        if entry["chain"] not in manifest["revisions"] or name not in chain[1].tables:
            raise BackupError(f"table {clip(name)} is not part of the {entry['chain']}")
        if name in seen or entry["member"] != f"tables/{name}.jsonl":
            raise BackupError(f"table {name} is listed twice or under another member name")
        seen.add(name)
        if not isinstance(entry["rows"], int) or isinstance(entry["rows"], bool):
            raise TypeError(f"the row count of {name} is not a number")
        columns = entry["columns"]
        if not isinstance(columns, list) or not columns:
            raise TypeError(f"table {name} has no column list")
        for column in columns:
            if not (isinstance(column, list) and len(column) == 2 and isinstance(column[0], str)):
                raise BackupError(f"table {name}: a column is not [name, kind]: {clip(column)}")
            if column[1] not in KINDS:
                raise BackupError(
                    f"table {name}: column {clip(column[0])} of unknown kind {clip(column[1])}"
                )


def _check_rows(entry: dict[str, Any], rows: IO[bytes], expected: str) -> None:
    """Every row of a table member decodes as restore will decode it; its checksum and row
    count are those of SHA256SUMS and the manifest."""
    digest = hashlib.sha256()
    count = 0
    member = entry["member"]
    wrong: BackupError | None = None  # the first bad row: said unless the member is damaged
    try:
        for count, line in _lines(rows, member, digest):
            if wrong is None:
                try:
                    _decode_row(entry, line, count)
                except BackupError as exc:
                    wrong = exc
    except BackupError as exc:  # a line over the bound: the digest cannot be finished
        wrong = exc
    else:
        if digest.hexdigest() != expected:
            raise BackupError(f"{member} is damaged: its SHA-256 differs from {SUMS}")
    if wrong is not None:
        raise wrong
    if count != entry["rows"]:
        raise BackupError(f"{member} holds {count} rows, the manifest says {entry['rows']}")


def _lines(rows: IO[bytes], member: str, digest: Any = None) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a member, each read within ``MAX_LINE`` bytes: a huge line is
    refused, never held whole. A last line without its newline is refused too (create ends
    every row with one)."""
    number = 0
    while True:
        line = rows.readline(MAX_LINE + 1)
        if not line:
            return
        if digest is not None:
            digest.update(line)
        number += 1
        if not line.endswith(b"\n"):
            if len(line) > MAX_LINE:
                raise BackupError(
                    f"{member} line {number} is over {MAX_LINE:,} bytes; no row is that long"
                )
            raise BackupError(f"{member} line {number} is cut short (no end of line)")
        yield number, line


def _decode_row(entry: dict[str, Any], line: bytes, number: int) -> dict[str, Any]:
    """A row's values by column name, decoded; BackupError says which line and column fail."""
    where = f"{entry['member']} line {number}"
    try:
        values = json.loads(line)
    except (ValueError, RecursionError):
        raise BackupError(f"{where} is not a JSON row") from None
    columns = entry["columns"]
    if not isinstance(values, list) or len(values) != len(columns):
        got = len(values) if isinstance(values, list) else "no list of"
        raise BackupError(f"{where} has {got} values; table {entry['name']} has {len(columns)}")
    out = {}
    for (name, kind), value in zip(columns, values, strict=True):
        try:
            out[name] = _decode(kind, value)
        except (ValueError, TypeError, IndexError, KeyError, OverflowError, binascii.Error):
            raise BackupError(
                f"{where}: column {name} holds {clip(value)}, not a {_KIND_WORDS[kind]}"
            ) from None
    return out


_KIND_WORDS = {
    "time": "time (ISO 8601)",
    "json": "JSON value in a list",
    "bytes": "base64 text",
    "plain": "number, text or boolean",
}


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
    for number, line in _lines(rows, entry["member"]):
        batch.append(_decode_row(entry, line, number))
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
