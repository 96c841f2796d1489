"""The pages' own files (stylesheet, scripts), shipped in the package: no CDN, no build step."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from expertline.web.app import AppContext
from expertline.web.pages import home_of, viewer

TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def _load() -> dict[str, bytes]:
    folder = resources.files("expertline.web") / "static"
    return {
        item.name: item.read_bytes()
        for item in folder.iterdir()
        if item.is_file() and any(item.name.endswith(ext) for ext in TYPES)
    }


def router(ctx: AppContext) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    files = _load()

    @r.get("/static/{name}")
    def static(name: str) -> Response:
        body = files.get(name)
        if body is None:
            return Response("not found", status_code=404, media_type="text/plain")
        kind = TYPES[name[name.rindex(".") :]]
        return Response(
            body,
            media_type=kind,
            headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    @r.get("/")
    def root(request: Request) -> Response:
        session = viewer(request)
        return RedirectResponse(home_of(session.role) if session else "/sign-in", status_code=303)

    return r
