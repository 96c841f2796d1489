"""Restoring a backup into an empty database, then upgrading it to this release's schema."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from sqlalchemy import JSON, Connection, Engine, MetaData, Table, func, insert, select, text
from sqlalchemy.exc import SQLAlchemyError

from expertline.backup.format import (
    CHAINS,
    INSERT_ROWS,
    NODE_STATE,
    BackupError,
    Summary,
    summary,
)
from expertline.backup.verify import check_archive, decode_row, member, open_archive, row_lines
from expertline.db.migrate import first_line


def restore(engine: Engine, path: Path) -> Summary:
    """Load the archive at ``path`` into the empty database behind ``engine``, then bring its
    schema to this release. The archive is verified first; a refusal changes nothing, and the
    rows go in in one transaction, all or none."""
    try:
        return _restore(engine, Path(path))
    except SQLAlchemyError as exc:
        raise BackupError(f"the database refused the restore: {first_line(exc)}") from exc


def _restore(engine: Engine, path: Path) -> Summary:
    with open_archive(path) as tar:
        manifest = check_archive(tar)
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
                _load_table(conn, table, entry, member(tar, entry["member"]))
            if conn.dialect.name == "postgresql":
                _advance_sequences(conn, names)
        for label in manifest["revisions"]:
            chains[label].upgrade(engine, "head")
    return summary(Path(path), manifest)


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
    for number, line in row_lines(rows, entry["member"]):
        batch.append(decode_row(entry, line, number))
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
