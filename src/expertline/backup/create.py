"""Creating a backup: every table of each schema chain present, read in one snapshot."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, Table, select, text
from sqlalchemy.exc import SQLAlchemyError

from expertline import __version__
from expertline.backup.format import (
    CHAINS,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    NODE_STATE,
    SUMS,
    BackupError,
    Summary,
    column_kind,
    encode_value,
    known_revision,
    summary,
)
from expertline.db.migrate import MigrationChain, first_line


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
    return summary(path, manifest)


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
                    "columns": [[c.name, column_kind(c)] for c in table.columns],
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
        known_revision(chain, revision)
        names = [  # parents first
            t.name
            for t in declared.sorted_tables
            if t.name in existing and t.name not in NODE_STATE
        ]
        found.append((chain, revision, names))
    return found


def _dump_table(conn: Connection, table: Table, target: Path) -> int:
    kinds = [column_kind(c) for c in table.columns]
    order = list(table.primary_key.columns) or list(table.columns)
    rows = 0
    with open(target, "w", encoding="utf-8") as out:
        result = conn.execution_options(yield_per=2000).execute(select(table).order_by(*order))
        for row in result:
            encoded = [encode_value(k, v) for k, v in zip(kinds, row, strict=True)]
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
