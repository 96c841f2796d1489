"""``/admin/config``: browse, search, create, edit and delete configuration objects, and
import or export the whole document as YAML.

Every change goes through the configuration store (``config.store``: the functions behind the
REST API), so it is validated as an import is and becomes a new version naming its actor.
Lists are paged and searched on the server over the cached document of the current version,
which keeps pages quick with 100,000 experts.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from expertline.config import store
from expertline.config.export import export_yaml
from expertline.config.http import RESOURCES
from expertline.config.schema import ConfigDocument, object_id
from expertline.config.validate import check_yaml, with_lines
from expertline.errors import Conflict, ExpertlineError, InvalidInput, NotFound
from expertline.web.admin import forms
from expertline.web.app import AppContext
from expertline.web.pages import (
    VIEWER_ROLES,
    PageExit,
    PageRoute,
    changing,
    error_page,
    render,
    signed_in,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 50
MAX_IMPORT = 64 << 20
TITLES = {
    "attributes": "Attributes",
    "experts": "Experts",
    "queues": "Queues",
    "entry-points": "Entry points",
    "presence-sources": "Presence sources",
    "message-sets": "Message sets",
}
COLUMNS: dict[str, tuple[str, ...]] = {
    "attributes": ("name", "type", "values", "description"),
    "experts": ("id", "name", "im", "phone", "enabled", "attributes"),
    "queues": ("id", "name", "select", "order", "offer_to", "priority"),
    "entry_points": ("dialed_number", "queue", "sip_mode", "name"),
    "presence": ("id", "kind", "jid", "host", "component"),
    "messages": ("locale", "offer", "accepted", "withdrawn"),
}


class _SearchIndex:
    """Lower-cased text of each object of a section, per configuration version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: dict[tuple[int, str], list[str]] = {}

    def keys(self, version: int, section: str, items: list[Any]) -> list[str]:
        key = (version, section)
        with self._lock:
            found = self._built.get(key)
        if found is None or len(found) != len(items):
            found = [_text_of(section, item) for item in items]
            with self._lock:
                self._built = {k: v for k, v in self._built.items() if k[0] == version}
                self._built[key] = found
        return found


def _text_of(section: str, item: Any) -> str:
    if section == "messages":
        locale, texts = item
        return (locale + " " + " ".join(str(v) for v in texts.model_dump().values() if v)).lower()
    if section == "experts":
        return " ".join(filter(None, (item.id, item.name, item.im, item.phone))).lower()
    body = item.model_dump(mode="json", exclude_defaults=True)
    return " ".join(str(v) for v in body.values()).lower()


def router(ctx: AppContext) -> APIRouter:
    r = APIRouter(route_class=PageRoute, include_in_schema=False)
    engine = ctx.engine
    index = _SearchIndex()

    def resource(segment: str) -> tuple[str, type[BaseModel], list[forms.FieldSpec]]:
        if segment not in RESOURCES:
            raise NotFound(f"no such kind of configuration object: {segment!r}")
        section, model = RESOURCES[segment]
        return section, model, forms.fields_of(model)

    @r.get("/admin/config")
    def config_home(request: Request) -> Response:
        signed_in(request, VIEWER_ROLES)
        return RedirectResponse("/admin/config/queues", status_code=303)

    @r.get("/admin/config/export.yaml")
    def export(request: Request) -> Response:
        signed_in(request, VIEWER_ROLES)
        version, doc = store.load_document(engine)
        return Response(
            export_yaml(doc),
            media_type="application/yaml; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="expertline-config-v{version}.yaml"',
                "Cache-Control": "no-store",
            },
        )

    @r.get("/admin/config/import")
    def import_form(request: Request) -> Response:
        signed_in(request, VIEWER_ROLES)
        return render(
            request,
            "admin/import.html",
            version=store.current_version(engine),
            problems=[],
            text="",
            result=None,
        )

    @r.post("/admin/config/import")
    async def import_apply(request: Request) -> Response:
        session, form = await changing(request)
        upload = form.get("file")
        text = str(form.get("text") or "")
        if upload is not None and not isinstance(upload, str):
            raw = await upload.read(MAX_IMPORT + 1)
            if raw:
                if len(raw) > MAX_IMPORT:
                    raise InvalidInput("the file is over 64 MiB; nothing was applied")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidInput("the file is not UTF-8 text; nothing was applied") from exc
        dry_run = form.get("action") == "validate"

        def work() -> tuple[Any, list[Any]]:
            doc, problems = check_yaml(text)
            if doc is None:
                return None, with_lines(text, problems)
            if dry_run:
                return store.plan_document(engine, doc), []
            return store.apply_document(engine, doc, session.principal.actor, "web:import"), []

        result, problems = await run_in_threadpool(work)
        status = 422 if problems else 200
        return render(
            request,
            "admin/import.html",
            status=status,
            version=store.current_version(engine),
            problems=problems,
            text=text if len(text) < 200_000 else "",
            result=result,
            dry_run=dry_run,
        )

    @r.get("/admin/config/{segment}")
    def listing(request: Request, segment: str, q: str = "", page: int = 1) -> Response:
        signed_in(request, VIEWER_ROLES)
        section, _, _ = resource(segment)
        version, _doc = store.load_document(engine)
        items = store.list_objects(engine, section)
        needle = q.strip().lower()[:200]
        if needle:
            keys = index.keys(version, section, items)
            found = [i for i, key in enumerate(keys) if needle in key]
        else:
            found = list(range(len(items)))
        pages = max(1, -(-len(found) // PAGE_SIZE))
        page = min(max(1, page), pages)
        shown = [items[i] for i in found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]]
        rows = [_row(section, item) for item in shown]
        return render(
            request,
            "admin/list.html",
            segment=segment,
            titles=TITLES,
            title=TITLES[segment],
            columns=COLUMNS[section],
            rows=rows,
            q=q,
            page=page,
            pages=pages,
            total=len(items),
            matched=len(found),
            version=version,
            query=lambda p: urlencode({k: v for k, v in (("q", q), ("page", p)) if v}),
        )

    @r.get("/admin/config/{segment}/-/new")
    def new_form(request: Request, segment: str) -> Response:
        signed_in(request, VIEWER_ROLES)
        _, _model, specs = resource(segment)
        state = forms.FormState(forms.values_of(specs, None))
        return _form_page(request, segment, specs, state, None)

    @r.post("/admin/config/{segment}/-/new")
    async def create(request: Request, segment: str) -> Response:
        session, form = await changing(request)
        section, model, specs = resource(segment)
        state = forms.submitted(specs, form)
        obj = forms.build(model, specs, state)
        if obj is None:
            return _form_page(request, segment, specs, state, None, status=422)
        locale, body = _split(section, obj)
        try:
            result = await run_in_threadpool(
                store.create_object, engine, section, body, session.principal.actor, locale
            )
        except InvalidInput as exc:
            forms.place(state, exc.details, f"{section}[{_position(section)}]")
            return _form_page(request, segment, specs, state, None, status=422)
        except Conflict as exc:
            state.general.append(exc.message)
            return _form_page(request, segment, specs, state, None, status=409)
        oid = locale or object_id(section, obj)
        return _saved(segment, oid, result.version)

    @r.post("/admin/config/{segment}/-/check")
    async def check(request: Request, segment: str) -> Response:
        """As you type: the problems the form would have, at their fields; changes nothing."""
        _, form = await changing(request, needs_active=False)
        section, model, specs = resource(segment)
        state = forms.submitted(specs, form)
        original = str(form.get("_original") or "") or None

        def work() -> None:
            obj, failed = forms.build_for_check(model, specs, state)
            if obj is None:
                return
            _, doc = store.load_document(engine)
            locale, body = _split(section, obj)
            problems, prefix = forms.document_problems(doc, section, body, original, locale)
            # A field with a problem of its own is not checked again against the document.
            again = {f"{prefix}.{name}" for name in failed}
            forms.place(state, [p for p in problems if p.path not in again], prefix)

        await run_in_threadpool(work)
        return JSONResponse(state.as_json(), headers={"Cache-Control": "no-store"})

    @r.get("/admin/config/{segment}/{oid}")
    def edit_form(request: Request, segment: str, oid: str) -> Response:
        signed_in(request, VIEWER_ROLES)
        section, _model, specs = resource(segment)
        found = store.get_object(engine, section, oid)
        extra = {"locale": oid} if section == "messages" else None
        state = forms.FormState(forms.values_of(specs, found, extra))
        saved = request.query_params.get("saved")
        return _form_page(request, segment, specs, state, oid, saved=saved)

    @r.post("/admin/config/{segment}/{oid}")
    async def save(request: Request, segment: str, oid: str) -> Response:
        session, form = await changing(request)
        section, model, specs = resource(segment)
        state = forms.submitted(specs, form)
        obj = forms.build(model, specs, state)
        if obj is None:
            return _form_page(request, segment, specs, state, oid, status=422)
        locale, body = _split(section, obj)
        if section == "messages" and locale != oid:
            state.errors["locale"] = [f"must stay {oid!r} (create another message set instead)"]
            return _form_page(request, segment, specs, state, oid, status=422)
        try:
            result = await run_in_threadpool(
                store.replace_object, engine, section, oid, body, session.principal.actor
            )
        except InvalidInput as exc:
            _, doc = store.load_document(engine)
            forms.place(state, exc.details, f"{section}[{forms._index(doc, section, oid)}]")
            return _form_page(request, segment, specs, state, oid, status=422)
        return _saved(segment, oid, result.version)

    @r.post("/admin/config/{segment}/{oid}/delete")
    async def remove(request: Request, segment: str, oid: str) -> Response:
        session, _ = await changing(request)
        section, _, _ = resource(segment)
        try:
            result = await run_in_threadpool(
                store.delete_object, engine, section, oid, session.principal.actor
            )
        except InvalidInput as exc:
            return error_page(request, 422, exc.message, exc.details)
        return RedirectResponse(
            f"/admin/config/{segment}?" + urlencode({"deleted": oid, "v": result.version}),
            status_code=303,
        )

    def _position(section: str) -> int:
        _, doc = store.load_document(engine)
        return len(doc.messages) if section == "messages" else len(getattr(doc, section))

    return r


def _split(section: str, obj: BaseModel) -> tuple[str | None, BaseModel]:
    if section == "messages":
        return forms.split_message_set(obj)
    return None, obj


def _saved(segment: str, oid: str, version: int) -> Response:
    return RedirectResponse(
        f"/admin/config/{segment}/{oid}?" + urlencode({"saved": version}), status_code=303
    )


def _row(section: str, item: Any) -> dict[str, Any]:
    if section == "messages":
        locale, texts = item
        body = {"locale": locale, **texts.model_dump(mode="json", exclude_none=True)}
        return {"id": locale, "cells": [_cell(body.get(c)) for c in COLUMNS[section]]}
    body = item.model_dump(mode="json")
    return {
        "id": object_id(section, item),
        "cells": [_cell(body.get(c)) for c in COLUMNS[section]],
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        text = ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    elif isinstance(value, list):
        text = ", ".join(_cell(v) for v in value)
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _form_page(
    request: Request,
    segment: str,
    specs: list[forms.FieldSpec],
    state: forms.FormState,
    oid: str | None,
    *,
    status: int = 200,
    saved: str | None = None,
) -> Response:
    section = RESOURCES[segment][0]
    id_field = {"attributes": "name", "entry_points": "dialed_number", "messages": "locale"}.get(
        section, "id"
    )
    return render(
        request,
        "admin/form.html",
        status=status,
        segment=segment,
        titles=TITLES,
        title=TITLES[segment],
        specs=specs,
        state=state,
        oid=oid,
        id_field=id_field,
        saved=saved,
        version=store.current_version(request.app.state.ctx.engine),
    )


__all__ = ["ConfigDocument", "ExpertlineError", "PageExit", "router"]
