from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from expertline.db import migrate
from expertline.db.engine import make_engine
from support.databases import postgres_database


@pytest.fixture
def pg() -> Iterator[Engine]:
    """A migrated engine on a fresh PostgreSQL database."""
    with postgres_database() as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield engine
        engine.dispose()
