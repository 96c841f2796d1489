"""Routers whose routes document their refusals: every 4xx/503 a route can answer appears in
the OpenAPI document with the problem JSON schema (``expertline.errors.ProblemResponse``),
so a client generated from it, or a tool checking answers against it, knows their shape."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter

from expertline.errors import PROBLEM_STATUSES, ProblemResponse, problem_responses


class ApiRouter(APIRouter):
    """An ``APIRouter`` whose routes all document ``refusals`` (problem JSON), and whose
    route-level ``responses`` for those statuses get the problem schema unless they give
    their own content."""

    def __init__(self, *args: Any, refusals: Iterable[int] = (), **kwargs: Any) -> None:
        responses = {**problem_responses(*refusals), **(kwargs.pop("responses", None) or {})}
        super().__init__(*args, responses=responses, **kwargs)

    def add_api_route(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        given = kwargs.get("responses") or {}
        kwargs["responses"] = {status: _with_problem(status, e) for status, e in given.items()}
        super().add_api_route(path, endpoint, **kwargs)


def _with_problem(status: int | str, entry: dict[str, Any]) -> dict[str, Any]:
    try:
        code = int(status)
    except ValueError:
        return entry
    if code not in PROBLEM_STATUSES or "model" in entry or "content" in entry:
        return entry
    return {"description": PROBLEM_STATUSES[code], **entry, "model": ProblemResponse}
