"""A runtime's exclusive claim on a SQLite database.

SQLite serves one node (there is no HA on it: two runtimes on one file would both accept tasks
and one of them would lose its commits). A runtime therefore holds an exclusive ``flock`` on
``<database>.lock`` for as long as it runs; the operating system releases it when the process
ends, however it ends, so a crashed runtime never leaves a stale claim behind. A second runtime
on the same file is refused with one line naming the holder. PostgreSQL needs no claim: there
the HA lease decides which node runs.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from expertline.db.engine import DatabaseError, parse_url


class DatabaseClaimed(DatabaseError):
    """Another process runs a runtime on this SQLite database."""


class SqliteClaim:
    """The exclusive claim on one SQLite database file, held until ``release``."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    @classmethod
    def for_url(cls, url: str) -> SqliteClaim | None:
        """The claim a runtime on ``url`` needs: None for PostgreSQL and in-memory SQLite."""
        parsed = parse_url(url)
        if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
            return None
        return cls(Path(parsed.database).resolve())

    def acquire(self) -> None:
        """Take the claim, or raise DatabaseClaimed naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise DatabaseClaimed(
                f"the SQLite database {self.database} is in use by another expertline runtime "
                f"(pid {holder}); SQLite serves one node (no HA): stop that one, or give this "
                "one its own --data-dir or --db (PostgreSQL for an active/standby pair)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
