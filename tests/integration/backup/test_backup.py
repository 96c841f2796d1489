"""``expertline backup``: a consistent archive of a live database, checked, and restored on
SQLite and PostgreSQL alike."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, MetaData, select

from expertline.backup import archive
from expertline.backup.archive import BackupError
from expertline.config.store import apply_document
from expertline.config.validate import load_yaml
from expertline.db import migrate
from expertline.db.engine import as_utc, make_engine
from expertline.reporting import migrate as reporting_migrate
from expertline.reporting.ingest import Ingester
from expertline.runtime.ports import TaskRequest
from expertline.runtime.service import WAITING_STATUSES, RuntimeService
from expertline.security.tokens import create_token, list_tokens
from support.databases import postgres_database, sqlite_url

DEMO = Path(__file__).parents[3] / "examples" / "demo.yaml"


@pytest.fixture
def source(engine: Engine) -> Engine:
    """A database with the demo configuration, a token, and real traffic in every part:
    three handled tasks, one abandoned, one still waiting, and the reports ingested."""
    reporting_migrate.upgrade(engine)
    apply_document(engine, load_yaml(DEMO.read_text()), "test")
    create_token(engine, "ops", "admin")
    return engine


async def _traffic(engine: Engine) -> str:
    """Run the real runtime on ``engine``; returns the id of the task left waiting."""
    service = RuntimeService(engine, node="backup-test")
    await service.async_start()
    try:
        for expert in ("chloe", "dev"):
            await service.async_set_presence(expert, "available")
        for i in range(3):
            view = await service.async_create_task(
                TaskRequest(
                    queue="network-escalations",
                    caller=f"+1555000{i}",
                    attributes={"ticket": f"T-{i}", "note": "", "tags": ["a", "b"]},
                    external_id=f"crm-{i}",
                )
            )
            offers = view.extra["offers"]
            assert (await service.async_accept(offers[0]["id"])).ok
            await service.async_task_event(view.id, "connected")
            await service.async_task_event(view.id, "ended")
        gone = await service.async_create_task(TaskRequest(queue="billing-any"))
        await service.async_task_event(gone.id, "abandoned")
        waiting = await service.async_create_task(TaskRequest(queue="billing-es", priority=3))
        return waiting.id
    finally:
        await service.async_stop()


def _rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every expertline table, in key order, times in UTC (SQLite hands them
    back naive), version tables included."""
    reflected = MetaData()
    reflected.reflect(engine)
    found: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in reflected.sorted_tables:
            order = list(table.primary_key.columns) or list(table.columns)
            found[table.name] = [
                tuple(as_utc(v) if isinstance(v, datetime) else v for v in row)
                for row in conn.execute(select(table).order_by(*order))
            ]
    return found


async def test_round_trip_keeps_every_row_on_both_backends_and_the_runtime_goes_on(
    source: Engine, tmp_path: Path
) -> None:
    waiting_id = await _traffic(source)
    assert Ingester(source, source).run_until_idle() > 0
    before = _rows(source)
    assert all(before[t] for t in ("runtime_tasks", "tcd", "rcd", "report_tasks")), before.keys()

    path = tmp_path / "backup.tar.gz"
    made = archive.create(source, path)
    made_by_migrations = {"alembic_version", "reporting_alembic_version", *archive.NODE_STATE}
    assert made.rows == sum(
        len(rows) for name, rows in before.items() if name not in made_by_migrations
    )
    assert archive.verify(path).tables == made.tables
    assert path.stat().st_mode & 0o777 == 0o600  # it holds token hashes and customer data

    targets = [sqlite_url(tmp_path / "restored")]
    with postgres_database() as pg_url:
        targets.append(pg_url)
        for url in targets:
            target = make_engine(url)
            try:
                archive.restore(target, path)
                assert _rows(target) == before, url
                # Sequences moved past the restored ids: new rows get new keys.
                create_token(target, "after-restore", "routing-client")
                assert [t.name for t in list_tokens(target)] == ["ops", "after-restore"]
                # The task that was waiting is in flight again on the restored database.
                service = RuntimeService(target, node="restored")
                await service.async_start()
                try:
                    view = await service.async_task(waiting_id)
                    assert view is not None and view.status in WAITING_STATUSES, view
                finally:
                    await service.async_stop()
            finally:
                target.dispose()


def test_the_archive_is_one_consistent_moment_while_changes_commit(
    source: Engine, tmp_path: Path
) -> None:
    """Each configuration change writes a version and its change rows in one transaction;
    every archive made meanwhile holds both halves of every change, never one."""
    document = yaml.safe_load(DEMO.read_text())
    stop = threading.Event()
    applied = []

    def keep_changing() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            document["queues"][0]["name"] = f"Billing (Spanish) #{n}"
            applied.append(apply_document(source, load_yaml(yaml.safe_dump(document)), "t"))

    writer = threading.Thread(target=keep_changing)
    writer.start()
    try:
        archives = []
        for i in range(5):
            archives.append(tmp_path / f"b{i}.tar.gz")
            archive.create(source, archives[-1])
    finally:
        stop.set()
        writer.join()
    assert len(applied) >= 2  # changes really committed while archives were made
    for path in archives:
        tables = _members(path)
        versions = {row["version"] for row in tables["config_versions"]}
        changed = {row["version"] for row in tables["config_changes"]}
        assert versions == changed, path
        objects = {row["version"] for row in tables["config_objects"]}
        assert max(objects) == max(versions), path


def _members(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The rows of each table, read straight from the archive, by column name."""
    raw = _members_raw(path)
    found = {}
    for entry in json.loads(raw[archive.MANIFEST])["tables"]:
        names = [name for name, _ in entry["columns"]]
        rows = raw[entry["member"]].splitlines()
        found[entry["name"]] = [dict(zip(names, json.loads(r), strict=True)) for r in rows]
    return found


def _rewrite(src: Path, dst: Path, change: dict[str, bytes], resum: bool = False) -> None:
    """Copy an archive with some members replaced (or added); ``resum`` rewrites SHA256SUMS
    to match, as a careless or hostile editor would."""
    with tarfile.open(src, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    members.update(change)
    if resum:
        members[archive.SUMS] = "".join(
            f"{hashlib.sha256(body).hexdigest()}  {name}\n"
            for name, body in members.items()
            if name != archive.SUMS
        ).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    dst.write_bytes(buffer.getvalue())


def test_verify_names_what_is_wrong(source: Engine, tmp_path: Path) -> None:
    good = tmp_path / "good.tar.gz"
    archive.create(source, good)
    manifest = json.loads(_members_raw(good)[archive.MANIFEST])
    bad = tmp_path / "bad.tar.gz"

    def refused(match: str) -> None:
        with pytest.raises(BackupError, match=match):
            archive.verify(bad)

    _rewrite(good, bad, {"tables/config_objects.jsonl": b'["x"]\n'})
    refused(r"tables/config_objects.jsonl is damaged")
    _rewrite(good, bad, {"tables/extra.jsonl": b""})
    refused(r"members and SHA256SUMS disagree: tables/extra.jsonl")
    _rewrite(good, bad, {"tables/api_tokens.jsonl": b""}, resum=True)
    refused(r"tables/api_tokens.jsonl holds 0 rows, the manifest says 1")
    newer = {**manifest, "revisions": {**manifest["revisions"], "database schema": "9999"}}
    _rewrite(good, bad, {archive.MANIFEST: json.dumps(newer).encode()}, resum=True)
    refused(r"database schema revision '9999' is unknown to this release")
    _rewrite(good, bad, {archive.MANIFEST: b'{"format": "other"}'}, resum=True)
    refused(r"not an expertline backup")
    foreign = [{**manifest["tables"][0], "name": "pg_authid"}, *manifest["tables"][1:]]
    _rewrite(
        good,
        bad,
        {archive.MANIFEST: json.dumps({**manifest, "tables": foreign}).encode()},
        resum=True,
    )
    refused(r"table 'pg_authid' is not part of the database schema")
    _rewrite(
        good, bad, {archive.MANIFEST: json.dumps({**manifest, "tables": None}).encode()}, resum=True
    )
    refused(r"manifest.json is malformed")
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    refused(r"not a readable backup archive")
    bad.write_bytes(gzip.compress(b"hello"))
    refused(r"not a readable backup archive")
    with pytest.raises(BackupError, match="no such file"):
        archive.verify(tmp_path / "missing.tar.gz")


def _members_raw(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def test_restore_refuses_a_database_with_rows_and_changes_nothing(
    source: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "backup.tar.gz"
    archive.create(source, path)
    create_token(source, "later", "routing-client")
    before = _rows(source)
    with pytest.raises(BackupError, match=r"restore needs an empty database: table \w+ has rows"):
        archive.restore(source, path)
    assert _rows(source) == before


def test_an_archive_of_an_older_schema_restores_and_is_upgraded(
    db_url: str, tmp_path: Path
) -> None:
    """A backup made before an upgrade: restored at its own revision, then brought to ours."""
    old = make_engine(db_url)
    try:
        migrate.upgrade(old, "0002")
        apply_document(old, load_yaml(DEMO.read_text()), "test")
        create_token(old, "ops", "admin")
        path = tmp_path / "old.tar.gz"
        made = archive.create(old, path)
        assert made.revisions == {"database schema": "0002"}
        before = _rows(old)
    finally:
        old.dispose()
    target = make_engine(sqlite_url(tmp_path / "new"))
    try:
        migrate.upgrade(target)  # empty, but its schema is already newer than the rows
        with pytest.raises(
            BackupError, match=f"its database schema is at revision {migrate.head_revision()}"
        ):
            archive.restore(target, path)
    finally:
        target.dispose()
    target = make_engine(sqlite_url(tmp_path / "newer"))
    try:
        archive.restore(target, path)
        assert migrate.current_revision(target) == migrate.head_revision()
        after = _rows(target)
        for name in ("config_objects", "config_changes", "config_versions", "api_tokens"):
            # Later revisions may add columns (at the end, empty); the old values are kept.
            kept = [new[: len(old)] for new, old in zip(after[name], before[name], strict=True)]
            assert kept == before[name], name
    finally:
        target.dispose()


def test_restore_refuses_a_damaged_archive_before_touching_the_database(
    source: Engine, tmp_path: Path
) -> None:
    good, bad = tmp_path / "good.tar.gz", tmp_path / "bad.tar.gz"
    archive.create(source, good)
    _rewrite(good, bad, {"tables/config_versions.jsonl": b"[]\n"})
    target = make_engine(sqlite_url(tmp_path / "empty"))
    try:
        with pytest.raises(BackupError, match="damaged"):
            archive.restore(target, bad)
        assert migrate.current_revision(target) is None  # not even a schema was made
    finally:
        target.dispose()


def test_the_command_line_creates_verifies_and_restores(tmp_path: Path) -> None:
    """The real ``expertline`` process: one line per outcome, exit 2 with one error line."""
    src = sqlite_url(tmp_path / "src")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "expertline", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    assert cli("--db", src, "db", "upgrade").returncode == 0
    assert cli("--db", src, "config", "import", str(DEMO)).returncode == 0
    made = cli("--db", src, "backup", "create")
    assert made.returncode == 0, made.stderr
    (path,) = tmp_path.glob("expertline-backup-*.tar.gz")
    assert f"backup written to {path.name}: 21 tables, " in made.stdout
    checked = cli("backup", "verify", str(path))
    assert checked.returncode == 0 and f"{path}: intact" in checked.stdout
    dst = sqlite_url(tmp_path / "dst")
    assert cli("--db", dst, "db", "upgrade").returncode == 0  # empty at the same revisions: fine
    restored = cli("--db", dst, "backup", "restore", str(path))
    assert restored.returncode == 0, restored.stderr
    exported = cli("--db", dst, "config", "export")
    assert exported.returncode == 0 and "Billing (Spanish)" in exported.stdout
    again = cli("--db", dst, "backup", "restore", str(path))
    assert again.returncode == 2
    (line,) = again.stderr.strip().splitlines()
    assert line.startswith("error: restore needs an empty database: table config_")
    assert line.endswith(" has rows")
    missing = cli("backup", "verify", "nope.tar.gz")
    assert (missing.returncode, missing.stderr.strip()) == (2, "error: nope.tar.gz: no such file")


def _tar_with(dst: Path, members: list[tarfile.TarInfo], bodies: dict[str, bytes]) -> None:
    """An archive of exactly these members (links and devices included), in this order."""
    with tarfile.open(dst, "w:gz") as tar:
        for info in members:
            body = bodies.get(info.name)
            if body is not None:
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)


def test_verify_refuses_members_outside_the_archive_links_and_devices(
    source: Engine, tmp_path: Path
) -> None:
    good = tmp_path / "good.tar.gz"
    archive.create(source, good)
    raw = _members_raw(good)
    bad = tmp_path / "bad.tar.gz"

    def with_member(info: tarfile.TarInfo, match: str) -> None:
        plain = [tarfile.TarInfo(name) for name in raw]
        _tar_with(bad, [*plain, info], dict(raw))
        with pytest.raises(BackupError, match=match):
            archive.verify(bad)

    with_member(tarfile.TarInfo("../evil.jsonl"), r"a member outside it: '\.\./evil\.jsonl'")
    with_member(tarfile.TarInfo("tables/../../x"), r"a member outside it")
    with_member(tarfile.TarInfo("/etc/cron.d/x"), r"a member outside it: '/etc/cron\.d/x'")
    link = tarfile.TarInfo("tables/link.jsonl")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with_member(link, r"a link where only files belong: 'tables/link\.jsonl'")
    hard = tarfile.TarInfo("tables/hard.jsonl")
    hard.type, hard.linkname = tarfile.LNKTYPE, "manifest.json"
    with_member(hard, r"a link where only files belong")
    device = tarfile.TarInfo("tables/dev.jsonl")
    device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
    with_member(device, r"a device where only files belong")
    with_member(tarfile.TarInfo("notes.txt"), r"a member a backup never has: 'notes\.txt'")


@pytest.mark.parametrize(
    ("member", "row", "match"),
    [
        ("config_versions", "bad time", r"column applied_at holds 'yesterday', not a time"),
        ("config_versions", "not JSON", r"line 1 is not a JSON row"),
        ("config_versions", "short", r"line 1 has 4 values; table config_versions has 5"),
        ("config_objects", "bad JSON column", r"holds 'x', not a JSON value in a list"),
        ("config_versions", "cut", r"line 1 is cut short"),
    ],
)
def test_verify_refuses_rows_that_restore_could_not_load(
    source: Engine, tmp_path: Path, member: str, row: str, match: str
) -> None:
    """Each of these passed verify and crashed restore with a traceback."""
    good, bad = tmp_path / "good.tar.gz", tmp_path / "bad.tar.gz"
    archive.create(source, good)
    raw = _members_raw(good)
    name = f"tables/{member}.jsonl"
    manifest = json.loads(raw[archive.MANIFEST])
    [entry] = [t for t in manifest["tables"] if t["name"] == member]
    columns = [c for c, _ in entry["columns"]]
    first, *rest = raw[name].splitlines(keepends=True)
    values = json.loads(first)
    if row == "bad time":
        values[columns.index("applied_at")] = "yesterday"
        line = json.dumps(values).encode() + b"\n"
    elif row == "not JSON":
        line = b"[1, 2,\n"
    elif row == "short":
        line = json.dumps(values[:-1]).encode() + b"\n"
    elif row == "bad JSON column":
        values[columns.index("body")] = "x"
        line = json.dumps(values).encode() + b"\n"
    else:
        line, rest = json.dumps(values).encode(), []
    body = line + b"".join(rest)
    entry["rows"] = len(body.splitlines())
    _rewrite(good, bad, {name: body, archive.MANIFEST: json.dumps(manifest).encode()}, resum=True)
    with pytest.raises(BackupError, match=match):
        archive.verify(bad)
    target = make_engine(sqlite_url(tmp_path / "empty"))
    try:
        with pytest.raises(BackupError, match=match):
            archive.restore(target, bad)
        assert migrate.current_revision(target) is None  # refused before any change
    finally:
        target.dispose()


def test_a_deep_or_huge_manifest_is_refused(source: Engine, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.tar.gz", tmp_path / "bad.tar.gz"
    archive.create(source, good)
    deep = b'{"format": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    _rewrite(good, bad, {archive.MANIFEST: deep}, resum=True)
    with pytest.raises(BackupError, match=r"manifest.json is not JSON: nested too deeply"):
        archive.verify(bad)
    _rewrite(good, bad, {archive.MANIFEST: b" " * (archive.MAX_MANIFEST + 1)}, resum=True)
    with pytest.raises(BackupError, match=r"manifest.json is 16,777,217 bytes"):
        archive.verify(bad)


class _Repeat(io.RawIOBase):
    """``size`` bytes of ``x`` then a newline, produced as read: never held whole."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        if n <= 0:
            return 0
        self.left -= n
        buffer[:n] = b"x" * (n - 1) + (b"\n" if self.left == 0 else b"x")
        return n


def test_a_huge_line_is_refused_within_bounded_memory(tmp_path: Path) -> None:
    """A 400 MB row (its checksum and count right) took restore to ~900 MB of memory."""
    src = sqlite_url(tmp_path / "src")
    engine = make_engine(src)
    try:
        migrate.upgrade(engine)
        create_token(engine, "ops", "admin")
        good = tmp_path / "good.tar.gz"
        archive.create(engine, good)
    finally:
        engine.dispose()
    raw = _members_raw(good)
    size = 400 << 20
    digest = hashlib.sha256()
    stream = _Repeat(size)
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)
    manifest = json.loads(raw[archive.MANIFEST])
    for entry in manifest["tables"]:
        if entry["name"] == "api_tokens":
            entry["rows"] = 1
    raw[archive.MANIFEST] = json.dumps(manifest).encode()
    sums = {n: hashlib.sha256(b).hexdigest() for n, b in raw.items() if n != archive.SUMS}
    sums["tables/api_tokens.jsonl"] = digest.hexdigest()
    raw[archive.SUMS] = "".join(f"{d}  {n}\n" for n, d in sums.items()).encode()
    bad = tmp_path / "bad.tar.gz"
    with (
        gzip.open(bad, "wb", compresslevel=1) as zipped,
        tarfile.open(fileobj=zipped, mode="w|") as tar,
    ):
        for name, body in raw.items():
            info = tarfile.TarInfo(name)
            if name == "tables/api_tokens.jsonl":
                info.size = size
                tar.addfile(info, io.BufferedReader(_Repeat(size), 1 << 20))
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    dst = sqlite_url(tmp_path / "dst")
    for command in (["backup", "verify", str(bad)], ["--db", dst, "backup", "restore", str(bad)]):
        probe = (
            "import resource, subprocess, sys;"
            f"r = subprocess.run([sys.executable, '-m', 'expertline', *{command!r}],"
            " capture_output=True, text=True);"
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
            "print(r.stderr, file=sys.stderr)"
        )
        run = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300
        )
        code, peak_kib = map(int, run.stdout.split())
        assert code == 2, run.stderr
        assert run.stderr.strip() == (
            "error: tables/api_tokens.jsonl line 1 is over 67,108,864 bytes; no row is that long"
        ), run.stderr
        assert peak_kib < 400 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"


def test_restore_that_the_database_refuses_loads_nothing_and_says_one_line(
    source: Engine, tmp_path: Path
) -> None:
    """Rows that verify cannot fault (a duplicate key): one line, exit 2, no row loaded."""
    good, bad = tmp_path / "good.tar.gz", tmp_path / "bad.tar.gz"
    archive.create(source, good)
    raw = _members_raw(good)
    name = "tables/config_versions.jsonl"
    manifest = json.loads(raw[archive.MANIFEST])
    for entry in manifest["tables"]:
        if entry["name"] == "config_versions":
            entry["rows"] += 1
    doubled = raw[name] + raw[name].splitlines(keepends=True)[0]
    _rewrite(
        good, bad, {name: doubled, archive.MANIFEST: json.dumps(manifest).encode()}, resum=True
    )
    archive.verify(bad)  # every row is readable
    dst = sqlite_url(tmp_path / "dst")
    run = subprocess.run(
        [sys.executable, "-m", "expertline", "--db", dst, "backup", "restore", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    [line] = run.stderr.strip().splitlines()
    assert line.startswith("error: the database refused the restore: "), line
    assert "Traceback" not in run.stderr and "[SQL" not in line
    target = make_engine(dst)
    try:
        versions = {"alembic_version", reporting_migrate.VERSION_TABLE, *archive.NODE_STATE}
        loaded = {t: rows for t, rows in _rows(target).items() if rows and t not in versions}
        assert loaded == {}
    finally:
        target.dispose()
