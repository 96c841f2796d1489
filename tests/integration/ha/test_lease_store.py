"""The lease row and the fence on a real PostgreSQL database."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import OperationalError

from expertline.db.engine import connect_params
from expertline.db.tables import routing_feed
from expertline.ha.lease import CHANNEL, Fenced, Grant, Held, LeaseStore, check_fence
from expertline.runtime import store
from support.wait import eventually

pytestmark = pytest.mark.postgres


def test_one_holder_at_a_time_and_every_grant_a_new_token(pg: Engine) -> None:
    lease = LeaseStore(pg)
    assert lease.acquire("a", 30) == Grant(1, None)
    held = lease.acquire("b", 30)  # held: by whom, and for how long
    assert isinstance(held, Held) and (held.holder, held.token) == ("a", 1)
    assert 29 < held.remaining <= 30
    assert lease.renew("a", 1, 30)
    state = lease.state()
    assert (state.holder, state.token) == ("a", 1) and 29 < state.remaining <= 30
    assert lease.release("a", 1)
    assert lease.acquire("b", 30) == Grant(2, "a")  # and who held it before
    assert not lease.renew("a", 1, 30)  # lost: a must step down
    assert not lease.release("a", 1)  # not a's any more: changes nothing
    assert isinstance(lease.acquire("a", 30), Held)


def test_a_lapsed_lease_is_taken_with_the_database_clock(pg: Engine) -> None:
    lease = LeaseStore(pg)
    assert lease.acquire("a", 1) == Grant(1, None)
    granted = eventually(
        lambda: isinstance(got := lease.acquire("b", 30), Grant) and got, timeout=5, interval=0.05
    )
    assert granted == Grant(2, "a")


def test_a_release_is_announced_to_listening_sessions(pg: Engine) -> None:
    lease = LeaseStore(pg)
    assert lease.acquire("a/1/x", 30) == Grant(1, None)
    with psycopg.connect(autocommit=True, **connect_params(pg)) as listener:
        listener.execute("LISTEN expertline_lease")
        assert not lease.release("b/2/y", 1)  # not b's: no notice
        assert lease.release("a/1/x", 1)
        notices = [(n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
    assert notices == [(CHANNEL, "a/1/x")]  # the payload names the releasing holder


def test_a_call_the_database_cannot_answer_in_time_is_given_up_there_too(pg: Engine) -> None:
    lease = LeaseStore(pg, timeout=0.2)
    assert lease.acquire("a", 30) == Grant(1, None)
    with pg.connect() as blocker, blocker.begin():  # holds the row, as a long commit would
        blocker.execute(text("SELECT 1 FROM ha_lease FOR UPDATE"))
        started = time.monotonic()
        with pytest.raises(OperationalError, match="statement timeout"):
            lease.renew("a", 1, 30)
        assert time.monotonic() - started < 5
    assert lease.renew("a", 1, 30)  # nothing was left behind


def _batch(seq: int, fence: int) -> store.Batch:
    row = {"id": seq, "type": "task.created", "task_id": f"t{seq}", "expert_id": None}
    return store.Batch(seq=seq, fence=fence, feed=[{**row, "data": {}, "created_at": 0.0}])


def test_a_stale_token_commits_nothing(pg: Engine) -> None:
    lease = LeaseStore(pg)
    token = 1
    assert lease.acquire("a", 30) == Grant(token, None)
    assert store.write_batch(pg, _batch(1, token))
    lease.release("a", token)
    assert lease.acquire("b", 30) == Grant(2, "a")
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
    assert lease.acquire("a", 30) == Grant(token, None)
    lease.release("a", token)  # lapsed, but a's commit is under way
    got: list[Grant | Held] = []
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
    assert got == [Grant(2, "a")]
