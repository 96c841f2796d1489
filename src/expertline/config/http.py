"""Configuration REST API: CRUD per object kind, the whole document, and history.

Every write validates the whole resulting configuration (so deleting a queue that an entry
point still uses fails with that entry point's path) and applies atomically as a new version.
Admin tokens write; admin and reporting tokens read. The applied version is returned in the
``X-Config-Version`` header of every response.
"""

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, PlainSerializer, ValidationError

from expertline.config import store
from expertline.config.export import document_data
from expertline.config.problems import pydantic_problems, salvage
from expertline.config.schema import (
    Attribute,
    ConfigDocument,
    EntryPoint,
    Expert,
    Locale,
    MessageSet,
    PresenceSource,
    Queue,
    object_id,
)
from expertline.config.validate import check_yaml, validate_document, with_lines
from expertline.errors import InvalidInput, Problem
from expertline.instants import iso
from expertline.limits import CONFIG_VERSION
from expertline.security.tokens import TokenInfo
from expertline.web.app import AppContext
from expertline.web.auth import require
from expertline.web.bodies import decode_json, is_json, not_json_problem
from expertline.web.refusals import ApiRouter

T = TypeVar("T")
VERSION_HEADER = "X-Config-Version"
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="Objects of this kind in the configuration.")
    version: int = Field(description="The configuration version these objects belong to.")


class MessageSetObject(MessageSet):
    """A message set as a REST object: the locale plus its texts."""

    locale: Locale


class VersionOut(BaseModel):
    version: int
    applied_at: Annotated[datetime, PlainSerializer(iso, return_type=str)]
    actor: str = Field(description="token:<name> for the API, cli:<user> for the command line.")
    source: str
    summary: str
    added: int
    changed: int
    removed: int


class HistoryPage(BaseModel):
    items: list[VersionOut]
    next: int | None = Field(description="Pass as `before` for older versions; null at the end.")


class ChangeOut(BaseModel):
    kind: str
    object_id: str
    op: str = Field(description="add | change | remove")
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class VersionDetail(VersionOut):
    changes: list[ChangeOut]


class ApplyOut(BaseModel):
    version: int
    added: int
    changed: int
    removed: int
    unchanged: bool


#: URL segment -> (document section, model, tag).
RESOURCES: dict[str, tuple[str, type[BaseModel]]] = {
    "attributes": ("attributes", Attribute),
    "experts": ("experts", Expert),
    "queues": ("queues", Queue),
    "entry-points": ("entry_points", EntryPoint),
    "presence-sources": ("presence", PresenceSource),
    "message-sets": ("messages", MessageSetObject),
}


def router(ctx: AppContext) -> APIRouter:
    engine = ctx.engine
    ctx.services.config_version = lambda: store.current_version(engine)
    r = ApiRouter(prefix="/api/v1", refusals=(401, 403, 404, 409, 413, 422))
    read = require("reporting")
    write = require()

    def versioned(response: Response, version: int) -> None:
        response.headers[VERSION_HEADER] = str(version)

    for segment, (section, model) in RESOURCES.items():
        _crud(r, engine, segment, section, model, read, write, versioned)

    @r.get(
        "/config",
        tags=["configuration"],
        summary="The whole applied configuration (canonical JSON: defaults omitted)",
        responses={200: {"model": ConfigDocument}},
    )
    def get_config(_: TokenInfo = Depends(read)) -> JSONResponse:
        version, doc = store.load_document(engine)
        return JSONResponse(document_data(doc), headers={VERSION_HEADER: str(version)})

    @r.put(
        "/config",
        tags=["configuration"],
        summary="Replace the whole configuration atomically (JSON, or YAML with a yaml type)",
        response_model=ApplyOut,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ConfigDocument"}},
                    "application/yaml": {"schema": {"type": "string"}},
                },
            }
        },
    )
    async def put_config(
        request: Request, response: Response, token: TokenInfo = Depends(write)
    ) -> ApplyOut:
        # The token is checked (the dependency) before the body is read; the application
        # refuses a body over its limit while it arrives (expertline.web.app).
        kind = request.headers.get("content-type")
        if not _is_yaml(kind) and not is_json(kind):
            raise not_json_problem(kind)
        body = await request.body()

        def apply() -> store.ApplyResult:
            doc, problems = _parse_document(body, kind)
            if doc is None:
                n = len(problems)
                raise InvalidInput(
                    f"the configuration has {n} problem{'s' if n != 1 else ''}; "
                    "nothing was applied",
                    problems,
                )
            return store.apply_document(engine, doc, store.token_actor(token.name), "api:config")

        result = await run_in_threadpool(apply)
        versioned(response, result.version)
        return _apply_out(result)

    @r.get(
        "/config/history",
        tags=["configuration"],
        summary="Applied versions, newest first: when, by which token or user, what changed",
        response_model=HistoryPage,
    )
    def get_history(
        limit: int = Query(50, ge=1, le=1000),
        before: int | None = Query(
            None, ge=1, le=CONFIG_VERSION[1], description="Only versions lower than this."
        ),
        _: TokenInfo = Depends(read),
    ) -> HistoryPage:
        items = store.history(engine, limit=limit, before=before)
        nxt = items[-1].version if len(items) == limit and items[-1].version > 1 else None
        return HistoryPage(items=[VersionOut(**v.__dict__) for v in items], next=nxt)

    @r.get(
        "/config/history/{version}",
        tags=["configuration"],
        summary="One version with its object-by-object changes",
        response_model=VersionDetail,
    )
    def get_version(
        version: int = Path(ge=1, le=CONFIG_VERSION[1], description="A configuration version."),
        limit: int = Query(1000, ge=1, le=100_000, description="Changes to list at most."),
        _: TokenInfo = Depends(read),
    ) -> VersionDetail:
        detail = store.changes(engine, version, limit=limit)
        info = store.history(engine, limit=1, before=version + 1)
        assert info and info[0].version == version
        return VersionDetail(
            **info[0].__dict__,
            changes=[
                ChangeOut(
                    kind=c.kind, object_id=c.object_id, op=c.op, before=c.before, after=c.after
                )
                for c in detail
            ],
        )

    return r


def _is_yaml(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in YAML_TYPES


def _parse_document(
    body: bytes, content_type: str | None
) -> tuple[ConfigDocument | None, list[Problem]]:
    """The document in a JSON or YAML body (InvalidInput when JSON is malformed)."""
    if not _is_yaml(content_type):
        return validate_document(decode_json(body))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, [Problem("", "the body is not UTF-8")]
    doc, problems = check_yaml(text)
    return doc, with_lines(text, problems)


def _apply_out(result: store.ApplyResult) -> ApplyOut:
    return ApplyOut(
        version=result.version,
        added=result.added,
        changed=result.changed,
        removed=result.removed,
        unchanged=result.unchanged,
    )


def _crud(
    r: APIRouter,
    engine: Any,
    segment: str,
    section: str,
    model: type[BaseModel],
    read: Any,
    write: Any,
    versioned: Any,
) -> None:
    """List/get/create/replace/delete for one kind of object."""
    noun = store.KINDS[section].replace("_", " ")
    tag = "configuration"
    is_messages = section == "messages"

    def to_out(obj: Any) -> Any:
        if is_messages:
            locale, texts = obj
            return MessageSetObject(locale=locale, **texts.model_dump(exclude_none=True))
        return obj

    def split(body: BaseModel) -> tuple[str | None, Any]:
        if is_messages:
            data = body.model_dump(exclude_none=True)
            locale = data.pop("locale")
            return locale, MessageSet.model_validate(data)
        return None, body

    # Bodies are validated here rather than by FastAPI so that their problems read exactly as
    # those of an imported file ("unknown key", "required", ...); the model still documents them.
    body_schema = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }

    async def read_body(request: Request, oid: str | None = None) -> BaseModel:
        """The body as a valid object, or InvalidInput with every problem: its own (paths
        within the body) and, as far as it can be read, what it would leave wrong in the
        configuration (document paths), as an imported file would show them at once."""
        kind = request.headers.get("content-type")
        if not is_json(kind):
            raise not_json_problem(kind)
        raw = await request.body()
        if not raw:
            raise InvalidInput(
                f"the body is empty: send the {noun} as JSON", [Problem("", "required")]
            )
        data = decode_json(raw)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = pydantic_problems(exc, ())
            if not is_messages:
                saved = salvage(model, data, exc, ())
                problems.extend(saved.problems)
                obj = saved.obj
                if obj is not None and (oid is None or object_id(section, obj) == oid):
                    problems.extend(
                        await run_in_threadpool(
                            store.edit_problems, engine, section, obj, oid, saved.bad
                        )
                    )
            raise InvalidInput(f"invalid {noun}", problems) from exc

    def oid_of(body: BaseModel) -> str:
        if is_messages:
            return str(body.locale)  # type: ignore[attr-defined]
        return object_id(section, body)

    @r.get(
        f"/{segment}",
        tags=[tag],
        summary=f"List {noun}s",
        response_model=Page[model],  # type: ignore[valid-type]
        name=f"list_{section}",
    )
    def list_(
        response: Response,
        offset: int = Query(0, ge=0),
        limit: int = Query(1000, ge=1, le=10_000),
        _: TokenInfo = Depends(read),
    ) -> Any:
        version, _doc = store.load_document(engine)
        items = store.list_objects(engine, section)
        versioned(response, version)
        return {
            "items": [to_out(o) for o in items[offset : offset + limit]],
            "total": len(items),
            "version": version,
        }

    @r.get(
        f"/{segment}/{{oid}}",
        tags=[tag],
        summary=f"Get one {noun}",
        response_model=model,
        name=f"get_{section}",
    )
    def get_(oid: str, response: Response, _: TokenInfo = Depends(read)) -> Any:
        version, _doc = store.load_document(engine)
        found = store.get_object(engine, section, oid)
        versioned(response, version)
        return to_out((oid, found)) if is_messages else found

    @r.post(
        f"/{segment}",
        tags=[tag],
        summary=f"Create a {noun}",
        status_code=201,
        response_model=model,
        responses={409: {"description": "The id exists already"}, 422: {"description": "Invalid"}},
        name=f"create_{section}",
        openapi_extra=body_schema,
    )
    async def create_(
        request: Request,
        response: Response,
        token: TokenInfo = Depends(write),
    ) -> Any:
        body = await read_body(request)
        locale, obj = split(body)
        result = await run_in_threadpool(
            store.create_object, engine, section, obj, store.token_actor(token.name), locale
        )
        versioned(response, result.version)
        response.headers["Location"] = f"{request.url.path.rstrip('/')}/{oid_of(body)}"
        return body

    @r.put(
        f"/{segment}/{{oid}}",
        tags=[tag],
        summary=f"Replace a {noun}",
        response_model=model,
        responses={404: {"description": "No such object"}, 422: {"description": "Invalid"}},
        name=f"replace_{section}",
        openapi_extra=body_schema,
    )
    async def replace_(
        oid: str,
        request: Request,
        response: Response,
        token: TokenInfo = Depends(write),
    ) -> Any:
        body = await read_body(request, oid)
        locale, obj = split(body)
        if is_messages and locale != oid:
            raise InvalidInput(
                "the id in the body differs from the one in the path",
                [Problem("locale", f"must be {oid!r}")],
            )
        result = await run_in_threadpool(
            store.replace_object, engine, section, oid, obj, store.token_actor(token.name)
        )
        versioned(response, result.version)
        return body

    @r.delete(
        f"/{segment}/{{oid}}",
        tags=[tag],
        summary=f"Delete a {noun}",
        status_code=204,
        responses={404: {"description": "No such object"}, 422: {"description": "Still used"}},
        name=f"delete_{section}",
    )
    def delete_(oid: str, token: TokenInfo = Depends(write)) -> Response:
        result = store.delete_object(engine, section, oid, store.token_actor(token.name))
        return Response(status_code=204, headers={VERSION_HEADER: str(result.version)})
