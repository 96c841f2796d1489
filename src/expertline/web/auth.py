"""Bearer-token authentication and role checks for the HTTP API.

``admin`` may call everything; other roles only the endpoints that name them. An ``expert``
token acts for the one expert it is bound to (``act_for``). Verified tokens are cached for a
few seconds so a busy routing client does not cost a database read per call; a revocation
takes effect within that bound. While the database cannot be read, a token verified before
stays valid (revoking one needs the database too) and an unknown one gets 503, promptly:
never a 500, never a wait on the database.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from expertline.errors import Forbidden, Unauthorized, Unavailable
from expertline.security.tokens import TokenInfo, verify_token

CACHE_SECONDS = 5.0


class TokenVerifier:
    def __init__(self, engine: Engine, ttl: float = CACHE_SECONDS) -> None:
        self._engine = engine
        self._ttl = ttl
        self._cache: dict[str, tuple[float, TokenInfo | None]] = {}

    def __call__(self, token: str) -> TokenInfo | None:
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            info = verify_token(self._engine, token)
        except SQLAlchemyError as exc:
            if hit is not None:
                return hit[1]  # the last answer, until the database answers again
            raise Unavailable(
                "the bearer token cannot be checked now: the database is not reachable "
                f"({type(exc).__name__}); retry",
                retry_after=2,
            ) from exc
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (now + self._ttl, info)
        return info

    def forget(self) -> None:
        self._cache.clear()


def allowed_roles(roles: Iterable[str]) -> frozenset[str]:
    """The roles admitted by an endpoint that names ``roles``: those and ``admin``."""
    return frozenset({"admin", *roles})


def authenticate(verifier: TokenVerifier, header: str) -> TokenInfo:
    """The live token in an ``Authorization`` header value, or Unauthorized."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
    info = verifier(token.strip())
    if info is None:
        raise Unauthorized("the bearer token is unknown or revoked")
    return info


def authorize(info: TokenInfo, allowed: frozenset[str]) -> TokenInfo:
    """``info`` if its role is one of ``allowed``, else Forbidden."""
    if info.role not in allowed:
        raise Forbidden(
            f"role {info.role!r} may not call this endpoint (needs {' or '.join(sorted(allowed))})"
        )
    return info


UNBOUND_EXPERT_TOKEN = (
    "this expert token is bound to no expert (it was made before expert tokens were bound); "
    "create one for the expert with: expertline tokens create NAME --role expert --expert "
    "EXPERT_ID"
)


def act_for(info: TokenInfo, expert_id: str) -> TokenInfo:
    """``info`` if it may act for ``expert_id`` (set presence, read and answer offers), else
    Forbidden: ``admin`` acts for anyone, an ``expert`` token for its own expert only."""
    if info.role == "admin":
        return info
    if info.role != "expert":
        raise Forbidden(f"role {info.role!r} may not act for an expert")
    if info.expert_id is None:
        raise Forbidden(UNBOUND_EXPERT_TOKEN)
    if info.expert_id != expert_id:
        raise Forbidden(
            f"this token acts for expert {info.expert_id!r} only, not for {expert_id!r}"
        )
    return info


def bearer(request: Request) -> TokenInfo:
    info = authenticate(request.app.state.verify_token, request.headers.get("authorization", ""))
    request.state.token = info
    return info


def require(*roles: str) -> Callable[[Request], TokenInfo]:
    """A FastAPI dependency admitting ``admin`` and the given roles."""
    allowed = allowed_roles(roles)

    def dependency(request: Request) -> TokenInfo:
        return authorize(bearer(request), allowed)

    return dependency


def require_on_loop(*roles: str) -> Callable[[Request], Awaitable[TokenInfo]]:
    """``require`` run on the event loop: verified tokens are cached, so this is a dict
    lookup nearly always, and it spares every request a hop through the thread pool."""
    check = require(*roles)

    async def dependency(request: Request) -> TokenInfo:
        return check(request)

    return dependency
