"""Browser sessions, kept server-side in the database (shared by both nodes of a pair).

The cookie carries a random 256-bit key; the table keeps only its SHA-256, so a copy of the
database signs nobody in. Each session belongs to a *principal*: a web user (username and
password) or an API token (signing in with a token), and is only as good as that principal:
a disabled user, a changed password or a revoked token ends it at the next request.

A session lasts ``LIFETIME`` from sign-in and ends earlier after ``IDLE`` without a request.
Every session has its own CSRF token; every form and every script POST carries it
(``check_csrf``), compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, and_, delete, insert, select, update

from expertline.db.engine import as_utc
from expertline.db.tables import api_tokens, web_sessions, web_users

log = logging.getLogger(__name__)

LIFETIME = timedelta(hours=12)
IDLE = timedelta(hours=1)
TOUCH_EVERY = timedelta(minutes=1)  # seen_at is written at most this often per session
COOKIE = "expertline_session"

PrincipalKind = Literal["user", "token"]
Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Principal:
    """Who a session acts as."""

    kind: PrincipalKind
    id: int
    name: str
    role: str
    expert_id: str | None = None

    @property
    def actor(self) -> str:
        """How configuration history names changes made in this session."""
        return f"web:{self.name}" if self.kind == "user" else f"token:{self.name}"


@dataclass(frozen=True)
class Session:
    key_hash: str
    principal: Principal
    csrf: str
    created_at: datetime
    expires_at: datetime
    seen_at: datetime

    @property
    def role(self) -> str:
        return self.principal.role


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class SessionStore:
    def __init__(
        self,
        engine: Engine,
        *,
        lifetime: timedelta = LIFETIME,
        idle: timedelta = IDLE,
        clock: Clock = _now,
    ) -> None:
        self.engine = engine
        self.lifetime = lifetime
        self.idle = idle
        self.clock = clock

    def create(self, principal: Principal) -> tuple[str, Session]:
        """A new session: (the cookie value, the session). The value is never stored."""
        key = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(
            key_hash(key), principal, secrets.token_urlsafe(32), now, now + self.lifetime, now
        )
        with self.engine.begin() as conn:
            conn.execute(
                insert(web_sessions).values(
                    key_hash=session.key_hash,
                    principal=principal.kind,
                    principal_id=principal.id,
                    name=principal.name,
                    role=principal.role,
                    expert_id=principal.expert_id,
                    csrf=session.csrf,
                    created_at=now,
                    expires_at=session.expires_at,
                    seen_at=now,
                )
            )
            # Sessions that ended on their own are removed as new ones begin.
            conn.execute(delete(web_sessions).where(web_sessions.c.expires_at < now))
        log.info(
            "web session started principal=%s name=%s role=%s",
            principal.kind,
            principal.name,
            principal.role,
        )
        return key, session

    def load(self, key: str | None) -> Session | None:
        """The live session of this cookie value, or None (unknown, expired, idle too long,
        or its user or token no longer valid: such a session is removed)."""
        if not key or len(key) > 128:
            return None
        digest = key_hash(key)
        now = self.clock()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(web_sessions).where(web_sessions.c.key_hash == digest)
            ).first()
            if row is None:
                return None
            session = _session(row)
            live = (
                session.expires_at > now
                and session.seen_at + self.idle > now
                and _principal_live(conn, session.principal)
            )
        if not live:
            self._drop(digest, "expired or its principal is no longer valid")
            return None
        if now - session.seen_at >= TOUCH_EVERY:
            with self.engine.begin() as conn:
                conn.execute(
                    update(web_sessions)
                    .where(web_sessions.c.key_hash == digest)
                    .values(seen_at=now)
                )
        return session

    def still_live(self, session: Session) -> bool:
        """For long-lived page streams: the session has not ended meanwhile."""
        now = self.clock()
        if session.expires_at <= now:
            return False
        with self.engine.connect() as conn:
            found = conn.execute(
                select(web_sessions.c.key_hash).where(web_sessions.c.key_hash == session.key_hash)
            ).first()
            return found is not None and _principal_live(conn, session.principal)

    def end(self, key: str | None) -> None:
        if key and len(key) <= 128:
            self._drop(key_hash(key), "signed out")

    def _drop(self, digest: str, reason: str) -> None:
        with self.engine.begin() as conn:
            gone = conn.execute(delete(web_sessions).where(web_sessions.c.key_hash == digest))
        if gone.rowcount:
            log.info("web session ended reason=%s", reason)


def end_sessions_of(engine: Engine, kind: PrincipalKind, principal_id: int) -> int:
    with engine.begin() as conn:
        gone = conn.execute(
            delete(web_sessions).where(
                and_(web_sessions.c.principal == kind, web_sessions.c.principal_id == principal_id)
            )
        )
    return int(gone.rowcount or 0)


def check_csrf(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf.encode(), str(given).encode())


def _principal_live(conn: Any, p: Principal) -> bool:
    if p.kind == "user":
        found = conn.execute(
            select(web_users.c.id).where(
                web_users.c.id == p.id,
                web_users.c.disabled_at.is_(None),
                web_users.c.role == p.role,
            )
        ).first()
    else:
        found = conn.execute(
            select(api_tokens.c.id).where(
                api_tokens.c.id == p.id, api_tokens.c.revoked_at.is_(None)
            )
        ).first()
    return found is not None


def _session(r: Any) -> Session:
    return Session(
        key_hash=r.key_hash,
        principal=Principal(r.principal, r.principal_id, r.name, r.role, r.expert_id),
        csrf=r.csrf,
        created_at=as_utc(r.created_at),
        expires_at=as_utc(r.expires_at),
        seen_at=as_utc(r.seen_at),
    )
