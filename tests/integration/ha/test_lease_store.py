"""The lease row and the fence on a real PostgreSQL database."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select, text

from expertline.db import migrate
from expertline.db.engine import make_engine
from expertline.db.tables import routing_feed
from expertline.ha.lease import Fenced, LeaseStore, check_fence
from expertline.runtime import store
from support.databases import postgres_database
from support.wait import eventually

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg() -> Iterator[Engine]:
    with postgres_database() as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield engine
        engine.dispose()


def test_one_holder_at_a_time_and_every_grant_a_new_token(pg: Engine) -> None:
    lease = LeaseStore(pg)
    assert lease.acquire("a", 30) == (1, None)
    assert lease.acquire("b", 30) is None  # held
    assert lease.renew("a", 1, 30)
    state = lease.state()
    assert (state.holder, state.token) == ("a", 1) and 29 < state.remaining <= 30
    lease.release("a", 1)
    assert lease.acquire("b", 30) == (2, "a")  # and who held it before
    assert not lease.renew("a", 1, 30)  # lost: a must step down
    lease.release("a", 1)  # not a's any more: changes nothing
    assert lease.acquire("a", 30) is None


def test_a_lapsed_lease_is_taken_with_the_database_clock(pg: Engine) -> None:
    lease = LeaseStore(pg)
    assert lease.acquire("a", 1) == (1, None)
    assert eventually(lambda: lease.acquire("b", 30), timeout=5, interval=0.05) == (2, "a")


def _batch(seq: int, fence: int) -> store.Batch:
    row = {"id": seq, "type": "task.created", "task_id": f"t{seq}", "expert_id": None}
    return store.Batch(seq=seq, fence=fence, feed=[{**row, "data": {}, "created_at": 0.0}])


def test_a_stale_token_commits_nothing(pg: Engine) -> None:
    lease = LeaseStore(pg)
    token = 1
    assert lease.acquire("a", 30) == (token, None)
    assert store.write_batch(pg, _batch(1, token))
    lease.release("a", token)
    assert lease.acquire("b", 30) == (2, "a")
    with pytest.raises(Fenced, match="lease token 1 is stale: the lease is at token 2 held by b"):
        store.write_batch(pg, _batch(2, token))
    with pg.connect() as conn:
        assert conn.execute(select(func.count()).select_from(routing_feed)).scalar() == 1
    assert store.write_batch(pg, _batch(2, 2))  # the new holder's commits go in


def test_a_takeover_waits_for_a_commit_under_way(pg: Engine) -> None:
    """The fence's share lock: a batch whose check passed commits before the new holder gets
    its token, so the new holder's recovery reads it."""
    lease = LeaseStore(pg)
    token = 1
    assert lease.acquire("a", 30) == (token, None)
    lease.release("a", token)  # lapsed, but a's commit is under way
    got: list[tuple[int, str | None] | None] = []
    with pg.connect() as conn, conn.begin():
        check_fence(conn, token)
        taker = threading.Thread(target=lambda: got.append(lease.acquire("b", 30)))
        taker.start()

        def b_waits_for_the_lock() -> bool:
            with pg.connect() as probe:
                return bool(
                    probe.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE ha_lease%'"
                        )
                    ).scalar()
                )

        eventually(b_waits_for_the_lock, timeout=10)
        assert got == []
    taker.join(timeout=10)
    assert got == [(2, "a")]
