"""The runtime lease on PostgreSQL (SPEC §8): the row that says which node of a pair is active.

Two runtime nodes share a PostgreSQL database. The one that holds the lease row
(``ha_lease``, name ``runtime``) runs the routing runtime; the other waits, with its presence
sources connected and its SIP front answering 503, and takes the lease once it lapses.
``keeper.py`` decides when to do what; this module is the SQL.

- **Time is the database's.** Acquiring and renewing set ``expires_at = now() + ttl`` with
  the database's clock, so the nodes' clocks never need to agree. (Across a promotion the
  row's times were written by the old primary's clock: primary and replicas keep their clocks
  in step, as every replicated database does.)
- **Each acquisition is a new token** (the previous one plus one). Every batch the runtime
  commits checks, in its own transaction and under a share lock on the lease row, that its
  token is still the lease's (``check_fence``): a node that lost the lease (paused,
  partitioned, too slow to renew) cannot commit anything after the other node took over
  (``Fenced``). The share lock makes the takeover wait for a commit already under way, so each
  batch is either committed before the new node reads the state, or refused. The row is
  replicated like every other: with a synchronous standby, a promoted replica has every
  token and every batch that was acknowledged, so fencing holds across the promotion.
- **A graceful stop hands over at once**: the runtime drains and commits, the lease is
  released (expired now) and the release is announced with ``NOTIFY expertline_lease``, which
  wakes the standby (``watch.py``) instead of leaving it to its next poll.
- **Every call is bounded** by the database too (``statement_timeout``), so a renewal the
  node gave up on cannot land later and stretch the grant.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

LEASE = "runtime"
CHANNEL = "expertline_lease"  # NOTIFY channel: a lease was released


class Fenced(Exception):
    """A commit carried a lease token that is no longer the lease's: another node is active."""

    def __init__(self, token: int, current: int | None, holder: str | None) -> None:
        super().__init__(
            f"lease token {token} is stale: the lease is at token {current} held by {holder}"
        )
        self.token = token


@dataclass(frozen=True)
class Grant:
    """The lease was taken: its new token, and who held it before (a holder id or None)."""

    token: int
    previous: str | None


@dataclass(frozen=True)
class Held:
    """The lease runs: who holds it, with which token, and for how many more seconds unless
    renewed (the database's clock; negative: lapsed but not taken yet)."""

    holder: str | None
    token: int
    remaining: float


LeaseState = Held  # what ``LeaseStore.state`` reads


class LeaseStore:
    """The lease row. Every call is one short transaction, given up by the database after
    ``timeout`` seconds."""

    def __init__(self, engine: Engine, name: str = LEASE, timeout: float | None = None) -> None:
        self.engine = engine
        self.name = name
        self.timeout = timeout

    def acquire(self, holder: str, ttl: float) -> Grant | Held:
        """Take the lease if it has lapsed; otherwise say who holds it and for how long."""
        with self.engine.begin() as conn:
            self._bound(conn)
            row = conn.execute(
                text(
                    "UPDATE ha_lease AS lease SET holder = :holder, token = lease.token + 1, "
                    "expires_at = now() + make_interval(secs => :ttl), acquired_at = now() "
                    "FROM (SELECT name, holder FROM ha_lease WHERE name = :name) AS previous "
                    "WHERE lease.name = previous.name AND lease.expires_at <= now() "
                    "RETURNING lease.token, previous.holder"
                ),
                {"holder": holder, "ttl": ttl, "name": self.name},
            ).first()
            if row is not None:
                return Grant(int(row[0]), row[1])
            return self._read(conn)

    def renew(self, holder: str, token: int, ttl: float) -> bool:
        """Extend the lease still held with ``token``; False when it was lost."""
        with self.engine.begin() as conn:
            self._bound(conn)
            row = conn.execute(
                text(
                    "UPDATE ha_lease SET expires_at = now() + make_interval(secs => :ttl) "
                    "WHERE name = :name AND holder = :holder AND token = :token RETURNING 1"
                ),
                {"holder": holder, "token": token, "ttl": ttl, "name": self.name},
            ).first()
        return row is not None

    def release(self, holder: str, token: int) -> bool:
        """Let the lease lapse now, if it is still ours (a graceful stop), and wake the
        listening standby; False when it was not ours any more."""
        with self.engine.begin() as conn:
            self._bound(conn)
            row = conn.execute(
                text(
                    "UPDATE ha_lease SET expires_at = now() "
                    "WHERE name = :name AND holder = :holder AND token = :token RETURNING 1"
                ),
                {"holder": holder, "token": token, "name": self.name},
            ).first()
            if row is None:
                return False
            # Delivered when this transaction commits, to every session that LISTENs; the
            # payload says who released (its own notice does not wake the releasing node).
            conn.execute(
                text("SELECT pg_notify(:channel, :holder)"), {"channel": CHANNEL, "holder": holder}
            )
        return True

    def state(self) -> Held:
        with self.engine.connect() as conn:
            return self._read(conn)

    def _read(self, conn: Connection) -> Held:
        holder, token, remaining = conn.execute(
            text(
                "SELECT holder, token, extract(epoch FROM expires_at - now()) "
                "FROM ha_lease WHERE name = :name"
            ),
            {"name": self.name},
        ).one()
        return Held(holder, int(token), float(remaining))

    def _bound(self, conn: Connection) -> None:
        if self.timeout is not None:
            conn.execute(
                text("SELECT set_config('statement_timeout', :ms, true)"),
                {"ms": f"{max(1, round(self.timeout * 1000))}ms"},
            )


def check_fence(conn: Connection, token: int, name: str = LEASE) -> None:
    """Inside a write transaction: raise Fenced unless ``token`` is the lease's current one.
    The share lock holds off a takeover until this transaction ends."""
    row = conn.execute(
        text("SELECT token, holder FROM ha_lease WHERE name = :name FOR SHARE"), {"name": name}
    ).first()
    if row is None or int(row[0]) != token:
        raise Fenced(token, None if row is None else int(row[0]), None if row is None else row[1])
