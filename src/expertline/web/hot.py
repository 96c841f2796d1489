"""Hot routes: the routing client's busiest endpoints, answered before FastAPI's machinery.

A task lifecycle is four small JSON requests (create, accept, connected, ended). For each of
them FastAPI spends several times the handler's own CPU on generic work: its middleware
layers, matching the path against every route, solving dependencies, body plumbing and
response encoding. A hot route answers a request that is fit to succeed straight from the
ASGI scope: it matches the method and path, checks the bearer token and the role, parses the
JSON body and validates it with the endpoint's own pydantic model (the body was decoded by
``expertline.web.bodies`` before), awaits the
handler and writes its JSON with orjson.

Every request it is not sure of goes on, with the body already read, to the FastAPI route of
the same path, which remains the documented endpoint (OpenAPI) and the one place that words
refusals: no or bad token, wrong role, a body that is not a JSON object valid for the model,
another content type, a body FastAPI would read otherwise. A refusal raised by the handler
itself (unknown task, conflict, runtime not running) is answered with the application's
problem JSON, as FastAPI's handler would. FastAPI's middleware, its optional OpenTelemetry
instrumentation included, does not see the requests answered here.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ValidationError
from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse, Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from expertline.errors import ExpertlineError, TooLarge
from expertline.security.tokens import TokenInfo
from expertline.web.auth import (
    TokenVerifier,
    allowed_roles,
    authenticate,
    authorize,
    require_on_loop,
)

Handler = Callable[..., Awaitable[tuple[int, Any]]]
"""``handler(value, **path_params) -> (status, JSON payload)``, where ``value`` is the validated
body or query model (None without one); refusals raise ExpertlineError. A route declared with
``with_token`` also passes the caller's verified token: ``handler(value, token=..., ...)``."""


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON response encoded by orjson; values orjson refuses (integers beyond 64 bits) fall
    back to Starlette's encoder so any payload the API could send before still goes out."""
    try:
        return Response(orjson.dumps(payload), status, media_type="application/json")
    except orjson.JSONEncodeError:
        return JSONResponse(payload, status)


def respond(result: tuple[int, Any]) -> Response:
    """The response to a handler's ``(status, payload)``."""
    status, payload = result
    return json_response(payload, status)


@dataclass(frozen=True)
class HotRoute:
    method: str
    path: str
    handler: Handler
    allowed: frozenset[str]
    body: type[BaseModel] | None
    body_required: bool
    query: type[BaseModel] | None
    regex: re.Pattern[str]
    with_token: bool = False


NO_JSON: Any = object()
"""The decoded body of a request without a JSON body (none, or another content type)."""


class _Refer(Exception):
    """The request is left to the FastAPI route (it answers or refuses it in its own words)."""


class HotRoutes:
    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], HotRoute] = {}
        self._by_method: dict[str, list[HotRoute]] = {}

    def declare(
        self,
        router: APIRouter,
        method: str,
        path: str,
        handler: Handler,
        *,
        roles: tuple[str, ...],
        body: type[BaseModel] | None = None,
        body_required: bool = True,
        query: type[BaseModel] | None = None,
        with_token: bool = False,
        **route: Any,
    ) -> None:
        """Serve ``method path`` (under ``router``'s prefix) hot, and declare on ``router`` the
        FastAPI route behind it, from the same path, roles and model.

        The FastAPI endpoint takes the path parameters, the body (``body``, optional unless
        ``body_required``) or the query model, and a token of one of ``roles`` (or admin); it
        awaits ``handler`` as the hot route does (with the token when ``with_token``: for a
        handler that checks whom the token may act for). ``route`` goes to ``add_api_route``
        (summary, tags, status code, responses, name).
        """
        params = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str)
            for name in compile_path(path)[2]
        ]
        if body is not None:
            params.append(
                inspect.Parameter(
                    "body",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=body if body_required else body | None,
                    default=inspect.Parameter.empty if body_required else None,
                )
            )
        elif query is not None:
            params.append(
                inspect.Parameter(
                    "query", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[query, Query()]
                )
            )
        params.append(
            inspect.Parameter(
                "token",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Any,
                default=Depends(require_on_loop(*roles)),
            )
        )

        async def endpoint(**given: Any) -> Response:
            token = given.pop("token")
            value = given.pop("body", None) if body is not None else given.pop("query", None)
            if with_token:
                given["token"] = token
            return respond(await handler(value, **given))

        endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        route.setdefault("name", handler.__name__)
        route.setdefault("response_model", dict[str, Any])
        router.add_api_route(path, endpoint, methods=[method], **route)
        self.add(
            method,
            router.prefix + path,
            handler,
            roles=roles,
            body=body,
            body_required=body_required,
            query=query,
            with_token=with_token,
        )

    def add(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        roles: tuple[str, ...],
        body: type[BaseModel] | None = None,
        body_required: bool = True,
        query: type[BaseModel] | None = None,
        with_token: bool = False,
    ) -> None:
        """Serve ``method path`` (a Starlette path template, ``{name}`` parameters) hot.

        A FastAPI route with the same method, path, roles and body or query model must exist:
        it documents the endpoint and answers every request the hot route leaves to it.
        ``declare`` makes both from one declaration.
        """
        if body is not None and query is not None:
            raise ValueError("a hot route takes a body model or a query model, not both")
        regex, _, names = compile_path(path)
        if with_token and "token" in names:
            raise ValueError("a route that takes the token has no path parameter named token")
        route = HotRoute(
            method,
            path,
            handler,
            allowed_roles(roles),
            body,
            body_required and body is not None,
            query,
            regex,
            with_token,
        )
        self._routes[(method, path)] = route
        self._by_method = {}
        for r in self._routes.values():
            self._by_method.setdefault(r.method, []).append(r)

    def match(self, method: str, path: str) -> tuple[HotRoute, dict[str, str]] | None:
        for route in self._by_method.get(method, ()):
            found = route.regex.match(path)
            if found is not None:
                return route, found.groupdict()
        return None

    async def serve(
        self,
        route: HotRoute,
        params: dict[str, str],
        scope: Scope,
        body: bytes,
        data: Any,
        receive: Receive,
        send: Send,
        *,
        verifier: TokenVerifier,
        fallback: ASGIApp,
        problem: Callable[[ExpertlineError], Response],
    ) -> None:
        """Answer the request or pass it on. Its ``body`` is already read (see
        ``read_body``) and ``data`` is that body's JSON value, or ``NO_JSON`` when it is empty
        or not announced as JSON (decoded by ``expertline.web.bodies``)."""
        try:
            token, value = _admit(route, scope, body, data, verifier)
        except (_Refer, ExpertlineError):
            await fallback(scope, receive, send)  # the body is still to be received
            return
        given: dict[str, Any] = {**params, "token": token} if route.with_token else params
        try:
            response = respond(await route.handler(value, **given))
        except ExpertlineError as exc:
            response = problem(exc)
        await response(scope, receive, send)


def _admit(
    route: HotRoute, scope: Scope, body: bytes, data: Any, verifier: TokenVerifier
) -> tuple[TokenInfo, Any]:
    """The verified token and the validated body or query (None if there is none); raises if
    FastAPI should decide."""
    authorization = content_type = None
    for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
        if name == b"authorization" and authorization is None:
            authorization = value
        elif name == b"content-type" and content_type is None:
            content_type = value
    if authorization is None:
        raise _Refer
    token = authorize(authenticate(verifier, authorization.decode("latin-1")), route.allowed)
    if route.query is not None:
        return token, _query(route.query, scope["query_string"])
    if route.body is None:
        return token, None  # FastAPI ignores a body the endpoint does not declare
    if not body:
        if route.body_required:
            raise _Refer
        return token, None
    # FastAPI reads JSON only when the content type says so (strict content type).
    if (
        data is NO_JSON
        or content_type is None
        or content_type.split(b";", 1)[0].strip().lower() != b"application/json"
    ):
        raise _Refer
    if not isinstance(data, dict):
        raise _Refer
    try:
        return token, route.body.model_validate(data)
    except ValidationError:
        raise _Refer from None


def _query(model: type[BaseModel], raw: bytes) -> BaseModel:
    """The query string validated as FastAPI reads a query model: the last value of each of
    the model's fields, other parameters ignored."""
    given = QueryParams(raw)
    try:
        return model.model_validate({k: given[k] for k in model.model_fields if k in given})
    except ValidationError:
        raise _Refer from None


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, refused (``TooLarge``) once it grows over ``limit`` bytes: a
    body sent in chunks has no length to check first. None when the client went away."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """``receive`` that first hands over the body already read."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
