"""What every web page shares: templates, who is signed in, the gates, and the answers.

Page routes use ``PageRoute``: a handler refuses by raising ``PageExit`` (a redirect to the
sign-in page, a 403 page) and any ``ExpertlineError`` becomes an HTML page with its message, so
handlers read as the happy path. ``signed_in`` admits a session of one of the given roles;
``changing`` also demands the form's CSRF token, a same-origin request and an active node —
every POST that changes something goes through it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData

from expertline.errors import ExpertlineError
from expertline.web.app import AppContext
from expertline.web.sessions import COOKIE, Session, SessionStore, check_csrf

log = logging.getLogger(__name__)

HOME = {"admin": "/admin", "supervisor": "/admin", "reporting": "/reports", "expert": "/console"}
ADMIN_ROLES = frozenset({"admin"})
VIEWER_ROLES = frozenset({"admin", "supervisor"})
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

_UNSET = object()

templates = Environment(
    loader=PackageLoader("expertline.web", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


class PageExit(Exception):
    """Stop handling a page request and answer with ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__("page exit")
        self.response = response


class PageRoute(APIRoute):
    """An APIRoute whose refusals are pages, not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except PageExit as exc:
                response = exc.response
            except ExpertlineError as exc:
                response = error_page(request, exc.http_status, exc.message, exc.details)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return route


@dataclass
class Web:
    """The web part of a node: sessions, and how to tell whether this node may change things."""

    ctx: AppContext
    sessions: SessionStore
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """False on an HA standby: its pages show and change nothing that routing owns."""
        return self.ctx.services.health.active


def web_of(ctx: AppContext) -> Web:
    """The one ``Web`` of this application (made on first use)."""
    if ctx.services.web is None:
        ctx.services.web = Web(ctx, SessionStore(ctx.engine))
    return ctx.services.web


def web(request: Request) -> Web:
    return web_of(request.app.state.ctx)


def viewer(request: Request) -> Session | None:
    """The signed-in session of this request, if any (read once per request)."""
    found = getattr(request.state, "web_session", _UNSET)
    if found is _UNSET:
        found = web(request).sessions.load(request.cookies.get(COOKIE))
        request.state.web_session = found
    assert found is None or isinstance(found, Session)
    return found


def signed_in(request: Request, roles: frozenset[str]) -> Session:
    """The session, if its role is one of ``roles``; else a way to sign in, or a 403 page."""
    session = viewer(request)
    if session is None:
        target = request.url.path + ("?" + request.url.query if request.url.query else "")
        raise PageExit(RedirectResponse("/sign-in?" + urlencode({"next": target}), status_code=303))
    if session.role not in roles:
        raise PageExit(
            error_page(
                request,
                403,
                f"Signed in as {session.principal.name} ({session.role}): this page is for "
                f"{' or '.join(sorted(roles))}.",
            )
        )
    return session


async def changing(
    request: Request, roles: frozenset[str] = ADMIN_ROLES, *, needs_active: bool = True
) -> tuple[Session, FormData]:
    """A POST that changes something: a session of ``roles``, its CSRF token, our own origin,
    and (unless told otherwise) an active node. Returns the session and the form."""
    session = await run_in_threadpool(signed_in, request, roles)  # reads the database
    form = await request.form()
    given = request.headers.get("x-csrf-token") or form.get("csrf")
    if not same_origin(request) or not check_csrf(session, str(given) if given else None):
        log.warning(
            "web change refused reason=bad csrf token or origin path=%s user=%s",
            request.url.path,
            session.principal.name,
        )
        raise PageExit(
            error_page(
                request,
                403,
                "This form is stale or did not come from these pages (CSRF check failed). "
                "Reload the page and try again.",
            )
        )
    if needs_active and not web(request).active:
        raise PageExit(standby_refusal(request))
    return session, form


def same_origin(request: Request) -> bool:
    """The Origin (or Referer) header, when the browser sends one, names this host."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return source is None
    host = request.headers.get("host", "")
    return urlsplit(source).netloc == host


def standby_refusal(request: Request) -> Response:
    from expertline.web.nodes import active_node

    other = active_node(request.app.state.ctx)
    where = f" The active node is {other.node}: {other.url}" if other else ""
    return error_page(
        request,
        409,
        "This node is the standby of an HA pair: it changes nothing." + where,
    )


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """A page, with what the layout needs: who is signed in, their CSRF token, the node."""
    from expertline.web.nodes import page_banner

    session = viewer(request)
    base = {
        "session": session,
        "csrf": session.csrf if session else "",
        "can_change": bool(session and session.role == "admin" and web(request).active),
        "path": request.url.path,
        "banner": page_banner(request.app.state.ctx),
    }
    html = templates.get_template(template).render(**base, **values)
    return HTMLResponse(html, status_code=status, headers=dict(SECURITY_HEADERS))


def error_page(request: Request, status: int, message: str, details: Any = None) -> HTMLResponse:
    return render(
        request,
        "error.html",
        status=status,
        status_code=status,
        message=message,
        details=details or [],
    )


def home_of(role: str) -> str:
    return HOME.get(role, "/sign-in")


def safe_next(target: str | None, role: str | None = None) -> str:
    """Only a path of our own pages (no open redirect)."""
    default = home_of(role) if role else "/admin"
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if not target.startswith(("/admin", "/console", "/reports")):
        return default
    return target
