"""The one sign-in of the web pages (``/admin``, ``/console``, ``/reports``).

People sign in with a username and password (``expertline users create``) or with an API token
(admin, supervisor, reporting, or an expert token bound to its expert). Either way the browser
gets a session cookie: HTTP-only, ``SameSite=Strict``, ``Secure`` when the page came over
HTTPS. The sign-in form carries its own CSRF token (a cookie and a field that must match) so
nobody can sign a browser in as someone else. Repeated failures for a name or from an address
are slowed down (``Throttle``).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from expertline.web import users
from expertline.web.app import AppContext
from expertline.web.pages import (
    PageRoute,
    changing,
    render,
    safe_next,
    viewer,
    web_of,
)
from expertline.web.sessions import COOKIE, Principal, Session, check_csrf

log = logging.getLogger(__name__)

FORM_COOKIE = "expertline_signin"
TOKEN_ROLES = frozenset({"admin", "supervisor", "reporting", "expert"})


@dataclass
class Throttle:
    """After ``allowed`` failures in a row for one key, refuse that key for a while (doubling,
    capped). A success clears the key."""

    allowed: int = 5
    pause: float = 30.0
    longest: float = 900.0
    clock: Any = time.monotonic
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)

    def wait(self, *keys: str) -> float:
        """Seconds before these keys may try again (0: now)."""
        now = self.clock()
        return max((self._failures.get(k, (0, 0.0))[1] - now for k in keys), default=0.0)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        if len(self._failures) > 100_000:
            self._failures.clear()
        for key in keys:
            count, _ = self._failures.get(key, (0, 0.0))
            count += 1
            until = 0.0
            if count >= self.allowed:
                until = now + min(self.longest, self.pause * 2 ** (count - self.allowed))
            self._failures[key] = (count, until)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)


def router(ctx: AppContext) -> APIRouter:
    r = APIRouter(route_class=PageRoute, include_in_schema=False)
    web = web_of(ctx)
    throttle: Throttle = web.extras.setdefault("throttle", Throttle())

    @r.get("/sign-in")
    def sign_in_form(request: Request, next: str = "") -> Response:
        session = viewer(request)
        if session is not None and not request.query_params.get("again"):
            return RedirectResponse(safe_next(next, session.role), status_code=303)
        return _form(request, next)

    @r.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        form = await request.form()
        target = str(form.get("next") or "")
        given = str(form.get("form_csrf") or "")
        expected = request.cookies.get(FORM_COOKIE, "")
        if not expected or not secrets.compare_digest(given.encode(), expected.encode()):
            return _form(request, target, "The sign-in form expired; please try again.", 400)
        client = f"ip:{request.client.host if request.client else '-'}"
        token = str(form.get("token") or "").strip()
        username = str(form.get("username") or "").strip()
        password = str(form.get("password") or "")
        keys = (client, f"user:{username.lower()}") if not token else (client,)
        wait = throttle.wait(*keys)
        if wait > 0:
            log.warning("web sign-in refused reason=throttled keys=%s", ",".join(keys))
            return _form(
                request,
                target,
                f"Too many failed attempts; try again in {int(wait) + 1} seconds.",
                429,
                username=username,
            )
        principal, error = (
            _by_token(request, token)
            if token
            else await run_in_threadpool(_by_password, ctx, username, password)
        )
        if principal is None:
            throttle.failed(*keys)
            log.info("web sign-in refused reason=%s", error)
            return _form(request, target, error, 401, username=username)
        throttle.succeeded(*keys)
        key, session = await run_in_threadpool(web.sessions.create, principal)
        resp = RedirectResponse(safe_next(target, session.role), status_code=303)
        set_session_cookie(request, resp, key, session)
        resp.delete_cookie(FORM_COOKIE, path="/sign-in")
        return resp

    @r.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        session = await run_in_threadpool(viewer, request)
        if session is not None:
            await changing(request, frozenset({session.role}), needs_active=False)
            web.sessions.end(request.cookies.get(COOKIE))
        resp = RedirectResponse("/sign-in", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    for page in ("/admin/sign-in", "/console/sign-in", "/reports/sign-in"):
        r.add_api_route(page, _to_sign_in(page.removesuffix("/sign-in")), methods=["GET"])

    return r


def _to_sign_in(home: str) -> Any:
    def redirect(next: str = "") -> Response:
        return RedirectResponse(
            "/sign-in?next=" + (next if next.startswith(home) else home), status_code=303
        )

    return redirect


def _form(
    request: Request, next: str, error: str | None = None, status: int = 200, username: str = ""
) -> Response:
    form_csrf = secrets.token_urlsafe(24)
    resp = render(
        request,
        "signin.html",
        status=status,
        next=safe_next(next) if next else "",
        error=error,
        username=username,
        form_csrf=form_csrf,
    )
    _set_strict_cookie(request, resp, FORM_COOKIE, form_csrf, path="/sign-in", max_age=3600)
    return resp


def _by_password(ctx: AppContext, username: str, password: str) -> tuple[Principal | None, str]:
    if not username or not password:
        return None, "Give a username and a password, or a token."
    user = users.authenticate(ctx.engine, username, password[: users.MAX_PASSWORD])
    if user is None:
        return None, "That username and password do not match an active user."
    return Principal("user", user.id, user.username, user.role, user.expert_id), ""


def _by_token(request: Request, token: str) -> tuple[Principal | None, str]:
    info = request.app.state.verify_token(token) if len(token) <= 256 else None
    if info is None:
        return None, "That token is unknown or revoked."
    if info.role not in TOKEN_ROLES:
        return None, f"A {info.role} token is for the API; these pages need another role."
    expert_id = getattr(info, "expert_id", None)
    if info.role == "expert" and not expert_id:
        return None, (
            "This expert token is bound to no expert; create one with "
            "expertline tokens create NAME --role expert --expert EXPERT_ID."
        )
    return Principal("token", info.id, info.name, info.role, expert_id), ""


def set_session_cookie(request: Request, resp: Response, key: str, session: Session) -> None:
    max_age = int((session.expires_at - session.created_at).total_seconds())
    _set_strict_cookie(request, resp, COOKIE, key, path="/", max_age=max_age)


def _set_strict_cookie(
    request: Request, resp: Response, name: str, value: str, *, path: str, max_age: int
) -> None:
    """Every cookie these pages set: out of scripts' reach, sent on same-site requests only,
    and over HTTPS only when the page came over HTTPS."""
    resp.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=path,
        max_age=max_age,
    )


__all__ = ["Throttle", "check_csrf", "router", "set_session_cookie"]
