"""People who sign in to the web pages with a username and a password.

Passwords are hashed with Argon2id (``argon2-cffi``, its default cost); only the hash is stored.
A user has one role: ``admin`` (everything), ``supervisor`` (sees the dashboard and reports,
changes nothing), ``reporting`` (reports only) or ``expert`` (the console, as the one expert
the user is bound to). Disabling a user or changing a password ends that user's sessions.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from expertline.db.engine import as_utc
from expertline.db.tables import web_users
from expertline.errors import Conflict, InvalidInput, NotFound, Problem

log = logging.getLogger(__name__)

UserRole = Literal["admin", "supervisor", "reporting", "expert"]
USER_ROLES: tuple[str, ...] = get_args(UserRole)
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024

_hasher = PasswordHasher()
# Verified against when the username is unknown, so a wrong name costs as long as a wrong
# password and the answer time does not tell which names exist.
_DUMMY_HASH = _hasher.hash("expertline: no such user")


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    expert_id: str | None
    created_at: datetime
    disabled_at: datetime | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None


def password_problem(password: str) -> str | None:
    """Why a password cannot be used, or None."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"a password has at most {MAX_PASSWORD} characters"
    if password != password.strip():
        return "a password may not start or end with a space"
    return None


def create_user(
    engine: Engine, username: str, role: str, password: str, expert_id: str | None = None
) -> User:
    """Add a user; InvalidInput listing every problem, Conflict if the name is taken."""
    problems = _identity_problems(engine, username, role, expert_id)
    why = password_problem(password)
    if why:
        problems.append(Problem("password", why))
    if problems:
        raise InvalidInput("cannot create user", problems)
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            new_id = conn.execute(
                insert(web_users)
                .values(
                    username=username,
                    role=role,
                    expert_id=expert_id,
                    password_hash=_hasher.hash(password),
                    created_at=now,
                    updated_at=now,
                )
                .returning(web_users.c.id)
            ).scalar_one()
    except IntegrityError as exc:
        raise Conflict(f"a user named {username!r} exists already") from exc
    log.info("web user created username=%s role=%s expert=%s", username, role, expert_id or "-")
    return User(int(new_id), username, role, expert_id, now, None)


def _identity_problems(
    engine: Engine, username: str, role: str, expert_id: str | None
) -> list[Problem]:
    problems = []
    if not USERNAME.match(username):
        problems.append(
            Problem(
                "username",
                "1 to 64 characters: letters, digits and _.@- (starting with a letter or digit)",
            )
        )
    if role not in USER_ROLES:
        problems.append(
            Problem("role", f"unknown role {role!r}; expected one of {', '.join(USER_ROLES)}")
        )
    if role == "expert" and expert_id is None:
        problems.append(Problem("expert", "an expert user is one expert: give --expert EXPERT_ID"))
    elif role != "expert" and expert_id is not None:
        problems.append(Problem("expert", f"only expert users are bound to an expert, not {role}"))
    elif expert_id is not None:
        from expertline.config.store import unknown_expert

        if (problem := unknown_expert(engine, expert_id)) is not None:
            problems.append(problem)
    return problems


def authenticate(engine: Engine, username: str, password: str) -> User | None:
    """The active user with this name and password, or None (same cost either way)."""
    with engine.connect() as conn:
        row = conn.execute(select(web_users).where(web_users.c.username == username)).first()
    stored = row.password_hash if row is not None else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or row.disabled_at is not None:
        return None
    if _hasher.check_needs_rehash(stored):  # the library's default cost went up
        with engine.begin() as conn:
            conn.execute(
                update(web_users)
                .where(web_users.c.id == row.id)
                .values(password_hash=_hasher.hash(password))
            )
    return _user(row)


def get_user(engine: Engine, username: str) -> User:
    with engine.connect() as conn:
        row = conn.execute(select(web_users).where(web_users.c.username == username)).first()
    if row is None:
        raise NotFound(f"no user named {username!r}")
    return _user(row)


def list_users(engine: Engine) -> list[User]:
    with engine.connect() as conn:
        rows = conn.execute(select(web_users).order_by(web_users.c.username)).all()
    return [_user(r) for r in rows]


def set_password(engine: Engine, username: str, password: str) -> User:
    """Replace a user's password; the user's sessions end."""
    why = password_problem(password)
    if why:
        raise InvalidInput("cannot set the password", [Problem("password", why)])
    user = get_user(engine, username)
    with engine.begin() as conn:
        conn.execute(
            update(web_users)
            .where(web_users.c.id == user.id)
            .values(password_hash=_hasher.hash(password), updated_at=datetime.now(UTC))
        )
    _end_sessions(engine, user.id)
    log.info("web user password changed username=%s", username)
    return user


def disable_user(engine: Engine, username: str) -> User:
    """Stop a user from signing in; the user's sessions end."""
    user = get_user(engine, username)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            update(web_users)
            .where(web_users.c.id == user.id, web_users.c.disabled_at.is_(None))
            .values(disabled_at=now, updated_at=now)
        )
    _end_sessions(engine, user.id)
    log.info("web user disabled username=%s", username)
    return get_user(engine, username)


def enable_user(engine: Engine, username: str) -> User:
    user = get_user(engine, username)
    with engine.begin() as conn:
        conn.execute(
            update(web_users)
            .where(web_users.c.id == user.id)
            .values(disabled_at=None, updated_at=datetime.now(UTC))
        )
    log.info("web user enabled username=%s", username)
    return get_user(engine, username)


def _end_sessions(engine: Engine, user_id: int) -> None:
    from expertline.web.sessions import end_sessions_of

    end_sessions_of(engine, "user", user_id)


def _user(r: Any) -> User:
    return User(
        r.id,
        r.username,
        r.role,
        r.expert_id,
        as_utc(r.created_at),
        as_utc(r.disabled_at) if r.disabled_at else None,
    )
