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

from expertline.backup.create import create
from expertline.backup.format import (
    MANIFEST,
    MAX_MANIFEST,
    NODE_STATE,
    SUMS,
    BackupError,
    Summary,
    TableSummary,
)
from expertline.backup.restore import restore
from expertline.backup.verify import verify

__all__ = [
    "MANIFEST",
    "MAX_MANIFEST",
    "NODE_STATE",
    "SUMS",
    "BackupError",
    "Summary",
    "TableSummary",
    "create",
    "restore",
    "verify",
]
