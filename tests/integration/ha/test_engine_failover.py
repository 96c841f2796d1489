"""The engine across a promotion, on a real primary and replica: the multi-host URL reaches
the primary, a server that is no longer writable empties the pool, and after kill -9 of the
primary and the promotion of the replica the same engine reaches the new primary."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from expertline.db.engine import make_engine
from expertline.settings import normalize_db_url
from support.replication import ReplicatedPostgres, replicated_postgres
from support.wait import eventually

pytestmark = pytest.mark.postgres


@pytest.fixture
def cluster() -> Iterator[ReplicatedPostgres]:
    with replicated_postgres() as c:
        yield c


def where(engine: Engine) -> tuple[int, bool, int]:
    """(server port, in recovery, backend pid) of a pooled connection."""
    with engine.connect() as conn:
        port, recovery, pid = conn.execute(
            text("SELECT inet_server_port(), pg_is_in_recovery(), pg_backend_pid()")
        ).one()
    return int(port), bool(recovery), int(pid)


def test_a_server_that_is_read_only_now_empties_the_pool(
    cluster: ReplicatedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    # As a demoted primary would be: the URL names only the replica, any session will do.
    engine = make_engine(f"{cluster.replica.url}?target_session_attrs=any")
    try:
        port, recovery, pid = where(engine)
        assert (port, recovery) == (cluster.replica.port, True)
        with caplog.at_level(logging.WARNING, logger="expertline.db"):
            with pytest.raises(DBAPIError, match="read-only transaction"), engine.begin() as c:
                c.execute(text("CREATE TABLE t (x int)"))
            assert where(engine)[2] != pid  # not the same session again: the pool was emptied
        (said,) = [r.getMessage() for r in caplog.records]
        assert said.startswith(
            "database connection lost, pool emptied error=ReadOnlySqlTransaction"
        )
    finally:
        engine.dispose()


def test_the_same_engine_reaches_the_promoted_replica(
    cluster: ReplicatedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(normalize_db_url(cluster.url))
    try:
        assert where(engine)[:2] == (cluster.primary.port, False)
        with caplog.at_level(logging.INFO, logger="expertline.db"):
            cluster.kill_primary()
            cluster.promote_replica()
            moved = eventually(lambda: where(engine), timeout=30, interval=0.1)
        assert moved[:2] == (cluster.replica.port, False)
        said = [r.getMessage() for r in caplog.records]
        assert said[0].startswith("database connection lost, pool emptied error=")
        assert said[-1].startswith(
            f"database connected again host=127.0.0.1 port={cluster.replica.port} after="
        )
    finally:
        engine.dispose()
