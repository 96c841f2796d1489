"""Bearer tokens with roles. Only a SHA-256 hash of each token is stored.

Tokens are 256-bit random values; a fast hash is enough (no password stretching is needed for
high-entropy secrets) and keeps per-request verification cheap.

An ``expert`` token is bound to one expert (``expert_id``): it sets that expert's presence
and answers that expert's offers, nobody else's. ``supervisor`` tokens read live state and
reports and change nothing.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

from sqlalchemy import Engine, insert, select, update

from expertline import limits
from expertline.db.engine import as_utc
from expertline.db.tables import api_tokens
from expertline.errors import InvalidInput, NotFound, Problem

Role = Literal["admin", "supervisor", "routing-client", "reporting", "expert"]
ROLES: tuple[str, ...] = get_args(Role)
PREFIX = "elt_"


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None
    expert_id: str | None = None  # the expert an ``expert`` token acts for


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: Engine, name: str, role: str, expert_id: str | None = None) -> str:
    """Create a token; the clear value is returned once and never stored.

    An ``expert`` token needs ``expert_id``, an expert of the stored configuration; no other
    role takes one."""
    problems = []
    if role not in ROLES:
        problems.append(
            Problem("role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        )
    if not name.strip() or len(name) > 255:
        problems.append(Problem("name", "a token name of 1 to 255 characters is required"))
    if role == "expert" and expert_id is None:
        problems.append(
            Problem("expert", "an expert token acts for one expert: give --expert EXPERT_ID")
        )
    elif role != "expert" and expert_id is not None:
        problems.append(Problem("expert", f"only expert tokens are bound to an expert, not {role}"))
    elif expert_id is not None:
        why = limits.text_problem(expert_id, limits.ID)
        if why:
            problems.append(Problem("expert", f"the expert id {why}"))
        else:
            from expertline.config.store import unknown_expert

            if (problem := unknown_expert(engine, expert_id)) is not None:
                problems.append(problem)
    if problems:
        raise InvalidInput("cannot create token", problems)
    token = PREFIX + secrets.token_urlsafe(32)
    row = {"name": name, "role": role, "token_hash": hash_token(token)}
    if expert_id is not None:  # written only when set: other roles fit any schema revision
        row["expert_id"] = expert_id
    with engine.begin() as conn:
        conn.execute(insert(api_tokens).values(created_at=datetime.now(UTC), **row))
    return token


def list_tokens(engine: Engine) -> list[TokenInfo]:
    with engine.connect() as conn:
        rows = conn.execute(select(api_tokens).order_by(api_tokens.c.id)).all()
    return [
        TokenInfo(
            r.id,
            r.name,
            r.role,
            as_utc(r.created_at),
            as_utc(r.revoked_at) if r.revoked_at else None,
            r.expert_id,
        )
        for r in rows
    ]


def revoke_token(engine: Engine, name: str) -> int:
    """Revoke every live token with this name; NotFound if there is none."""
    with engine.begin() as conn:
        result = conn.execute(
            update(api_tokens)
            .where(api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    if result.rowcount == 0:
        raise NotFound(f"no live token named {name!r}")
    return int(result.rowcount)


def verify_token(engine: Engine, token: str) -> TokenInfo | None:
    """The live token with this value, or None."""
    with engine.connect() as conn:
        row = conn.execute(
            select(api_tokens).where(
                api_tokens.c.token_hash == hash_token(token), api_tokens.c.revoked_at.is_(None)
            )
        ).first()
    if row is None:
        return None
    return TokenInfo(row.id, row.name, row.role, as_utc(row.created_at), None, row.expert_id)
