"""A throwaway PostgreSQL primary and its streaming replica on loopback.

Used by the HA integration tests and ``expertline bench ha`` (never by a node).
``replicated_postgres()`` makes a throwaway cluster with the server binaries of the Debian
packages (``/usr/lib/postgresql/<version>/bin``, or ``EXPERTLINE_PG_BIN``): ``initdb`` a
primary, start it on a free port, copy it with ``pg_basebackup`` into a replica that streams
from it as its *synchronous* standby (``synchronous_standby_names = '*'``, the default
``synchronous_commit = on``: a commit is acknowledged once the replica has it on disk), and
start that on another free port. The servers refuse to run as root, so under root they run
as the ``postgres`` user (``runuser``). Both are stopped and their files removed afterwards.

The replica has no synchronous standby of its own: once promoted it commits alone, as a
failover manager (Patroni, pg_auto_failover) leaves a new primary whose peer is gone.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from sqlalchemy import create_engine, text

from expertline.net import free_port

SERVER_USER = "postgres"  # who runs the servers when the tests run as root
DATABASE = "expertline"


class ServersMissing(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def server_bin() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``/``pg_basebackup`` (the newest installed)."""
    explicit = os.environ.get("EXPERTLINE_PG_BIN")
    if explicit:
        return Path(explicit)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


@dataclass
class Server:
    name: str
    datadir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def postmaster_pid(self) -> int | None:
        pidfile = self.datadir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(pidfile.read_text().splitlines()[0])
        return None


class ReplicatedPostgres:
    """A primary and its synchronous streaming replica; see the module docstring."""

    def __init__(self, bindir: Path, workdir: Path) -> None:
        self.bindir, self.workdir = bindir, workdir
        self.primary = Server("primary", workdir / "primary", free_port())
        self.replica = Server("replica", workdir / "replica", free_port())
        self._as_root = os.geteuid() == 0

    # --- what callers use ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """Both servers in one multi-host URL: the client connects to whichever is primary."""
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.replica.port}"
        return f"postgresql://postgres@{hosts}/{DATABASE}?target_session_attrs=read-write"

    def kill_primary(self) -> None:
        """kill -9 of the primary's postmaster and every process of it, as a host that dies."""
        pid = self.primary.postmaster_pid()
        if pid is None:
            raise RuntimeError("the primary is not running")
        postmaster = psutil.Process(pid)
        processes = [postmaster, *postmaster.children(recursive=True)]
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)

        def gone(process: psutil.Process) -> bool:  # a zombie is dead: its parent reaps it
            try:
                return process.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        _until(lambda: all(gone(p) for p in processes), 10, "the primary's processes to end")

    def promote_replica(self) -> None:
        """What the failover manager does: the replica becomes a primary (``pg_ctl promote``
        waits until it accepts writes)."""
        self._pg("pg_ctl", "promote", "-w", "-t", "60", "-D", str(self.replica.datadir))

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._pg(
            "initdb", "-D", str(self.primary.datadir), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        self._start(self.primary, synchronous_standby_names="'*'")
        self._pg(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
            "-D", str(self.replica.datadir), "-X", "stream", "-c", "fast", "-R",
            "--no-sync",
        )  # fmt: skip
        # The copy has the primary's files: the replica is no synchronous primary itself.
        self._start(self.replica, synchronous_standby_names="''")
        admin = create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{self.primary.port}/postgres",
            isolation_level="AUTOCOMMIT",
        )
        try:
            with admin.connect() as conn:

                def synchronous() -> bool:
                    state = conn.execute(
                        text("SELECT sync_state, state FROM pg_stat_replication")
                    ).all()
                    return [tuple(row) for row in state] == [("sync", "streaming")]

                _until(synchronous, 60, "the replica to stream synchronously", interval=0.05)
                conn.execute(text(f"CREATE DATABASE {DATABASE}"))
        finally:
            admin.dispose()
        # A synchronous commit is on the replica's disk, not yet replayed: wait for that.
        replica = create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{self.replica.port}/postgres"
        )
        try:
            with replica.connect() as conn:

                def replayed() -> bool:
                    found = conn.execute(
                        text("SELECT count(*) FROM pg_database WHERE datname = :name"),
                        {"name": DATABASE},
                    ).scalar()
                    conn.rollback()  # a new snapshot next time
                    return found == 1

                _until(replayed, 60, "the replica to have the database", interval=0.05)
        finally:
            replica.dispose()

    def stop(self) -> None:
        for server in (self.replica, self.primary):
            if server.postmaster_pid() is not None and (server.datadir / "PG_VERSION").exists():
                self._pg(
                    "pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(server.datadir),
                    check=False,
                )  # fmt: skip
            pid = server.postmaster_pid()
            if pid is not None and psutil.pid_exists(pid):
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).kill()

    def log(self, server: Server) -> str:
        path = self.workdir / f"{server.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _start(self, server: Server, **settings: str) -> None:
        options = {
            "port": str(server.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.workdir}'",
            "wal_level": "replica",
            "max_wal_senders": "4",
            "hot_standby": "on",
            "wal_sender_timeout": "5s",  # a dead peer is noticed in seconds, not a minute
            "wal_receiver_timeout": "5s",
            "shared_buffers": "16MB",
            **settings,
        }
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        log = self.workdir / f"{server.name}.log"
        self._pg(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(server.datadir), "-l", str(log),
            "-o", opts,
        )  # fmt: skip

    def _pg(self, program: str, *args: str, check: bool = True) -> None:
        command = [str(self.bindir / program), *args]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, cwd=self.workdir
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({result.returncode}): {result.stderr or result.stdout}"
            )


def _until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def servers_available() -> bool:
    bindir = server_bin()
    return bindir is not None and (bindir / "initdb").exists()


@contextmanager
def replicated_postgres() -> Iterator[ReplicatedPostgres]:
    """A primary and a synchronous replica of it, stopped and removed afterwards. Raises
    ServersMissing without the server binaries."""
    bindir = server_bin()
    if bindir is None or not (bindir / "initdb").exists():
        raise ServersMissing(
            "the PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) are not installed; "
            "set EXPERTLINE_PG_BIN to their directory"
        )
    workdir = Path(tempfile.mkdtemp(prefix="expertline-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVER_USER)
        os.chown(workdir, user.pw_uid, user.pw_gid)
    cluster = ReplicatedPostgres(bindir, workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
