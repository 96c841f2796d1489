"""A node on a SQLite file, configured the way an operator would do it, for browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

from expertline.db import migrate
from expertline.db.engine import make_engine
from support.processes import ServerProcess, cli, running_server


def configured_sqlite(tmp_path: Path, yaml: str) -> tuple[str, Engine]:
    """A migrated SQLite database under ``tmp_path``, with ``yaml`` imported as its
    configuration through ``expertline config import``; its URL and an engine on it."""
    url = f"sqlite:///{tmp_path / 'expertline.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    (tmp_path / "config.yaml").write_text(yaml)
    cli("--db", url, "config", "import", str(tmp_path / "config.yaml"), check=True)
    return url, engine


@contextmanager
def serving(tmp_path: Path, url: str, *args: str) -> Iterator[ServerProcess]:
    """``expertline serve`` (with ``args``) on the database at ``url``, data in ``tmp_path``."""
    env = {"EXPERTLINE_DB": url, "EXPERTLINE_DATA_DIR": str(tmp_path)}
    with running_server(tmp_path, *args, env=env) as server:
        yield server
