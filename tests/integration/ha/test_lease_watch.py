"""The standby's LISTEN connection on a real PostgreSQL: it hears a release, and comes back
when its connection is cut."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from expertline.ha.lease import Grant, LeaseStore
from expertline.ha.watch import APPLICATION, LeaseWatch
from support.wait import async_eventually

pytestmark = pytest.mark.postgres


async def test_a_release_reaches_the_listener_and_a_cut_connection_is_made_again(
    pg: Engine,
) -> None:
    lease = LeaseStore(pg)
    heard: list[str] = []
    watch = LeaseWatch.for_engine(pg)
    watch.backoff = (0.05, 0.2)
    await watch.async_start(heard.append)
    try:
        await async_eventually(lambda: watch.listening, timeout=10)
        assert lease.acquire("a/1/x", 30) == Grant(1, None)
        assert lease.release("a/1/x", 1)
        await async_eventually(lambda: heard == ["a/1/x"], timeout=5)

        with pg.connect() as conn:  # the server ends the listening session
            cut = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND datname = current_database()"
                ),
                {"name": APPLICATION},
            ).scalars()
            assert list(cut) == [True]
        await async_eventually(lambda: not watch.listening, timeout=10)
        await async_eventually(lambda: watch.listening, timeout=10)
        assert lease.acquire("b/2/y", 30) == Grant(2, "a/1/x")
        assert lease.release("b/2/y", 2)
        await async_eventually(lambda: heard == ["a/1/x", "b/2/y"], timeout=5)
    finally:
        await watch.async_stop()
    assert not watch.listening
