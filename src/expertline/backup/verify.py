"""Verifying a backup without a database: members, checksums, manifest and every row."""

from __future__ import annotations

import binascii
import contextlib
import gzip
import hashlib
import json
import re
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from expertline.backup.format import (
    CHAINS,
    FORMAT,
    FORMAT_VERSION,
    KIND_WORDS,
    KINDS,
    MANIFEST,
    MAX_LINE,
    MAX_MANIFEST,
    MAX_SUMS,
    SUMS,
    BackupError,
    Summary,
    decode_value,
    known_revision,
    summary,
)
from expertline.errors import clip

_TABLE_MEMBER = re.compile(r"tables/[a-z][a-z0-9_]{0,62}\.jsonl")


def verify(path: Path) -> Summary:
    """Check an archive as restore will read it: readable, only plain members with expected
    names, every member's checksum and row count, a known format and schema revisions, and
    every row (JSON, one value per column, times, JSON and bytes values that decode). Raises
    BackupError naming the first thing wrong."""
    with open_archive(path) as tar:
        manifest = check_archive(tar)
    return summary(Path(path), manifest)


@contextlib.contextmanager
def open_archive(path: Path) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            yield tar
    except FileNotFoundError:
        raise BackupError(f"{path}: no such file") from None
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError, zlib.error) as exc:
        raise BackupError(f"{path}: not a readable backup archive ({exc})") from None


def member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    try:
        f = tar.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise BackupError(f"the archive has no {name}")
    return f


def check_archive(tar: tarfile.TarFile) -> dict[str, Any]:
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
        _check_rows(entry, member(tar, entry["member"]), sums[entry["member"]])
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
    return member(tar, name).read()


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
        known_revision(chains[label][0], revision)
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
        for count, line in row_lines(rows, member, digest):
            if wrong is None:
                try:
                    decode_row(entry, line, count)
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


def row_lines(rows: IO[bytes], member: str, digest: Any = None) -> Iterator[tuple[int, bytes]]:
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


def decode_row(entry: dict[str, Any], line: bytes, number: int) -> dict[str, Any]:
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
            out[name] = decode_value(kind, value)
        except (ValueError, TypeError, IndexError, KeyError, OverflowError, binascii.Error):
            raise BackupError(
                f"{where}: column {name} holds {clip(value)}, not a {KIND_WORDS[kind]}"
            ) from None
    return out
