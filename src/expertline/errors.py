"""Typed failures shared by every surface (CLI, HTTP, IM, SIP).

Each carries a stable ``code`` and a one-line ``message``; ``details`` lists individual problems
(for example every configuration error, each with the YAML path it concerns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field


def clip(value: Any, keep: int = 40) -> str:
    """``repr(value)``, but of a long value only its start and its size: an error message
    never echoes a huge input back whole (``'xxxx…'…(10,000,000 chars)``)."""
    if isinstance(value, str) and len(value) > keep:
        return f"{value[:keep]!r}…({len(value):,} chars)"
    text = repr(value)
    return text if len(text) <= keep + 20 else f"{text[:keep]}…({len(text):,} chars)"


@dataclass(frozen=True)
class Problem:
    """One problem in an input, located by a path such as ``queues[2].select``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


@dataclass
class ExpertlineError(Exception):
    message: str
    details: list[Problem] = field(default_factory=list)
    code: str = "error"
    http_status: int = 400

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = [p.as_dict() for p in self.details]
        return {"error": body}


class InvalidInput(ExpertlineError):
    def __init__(self, message: str, details: list[Problem] | None = None) -> None:
        super().__init__(message, details or [], "invalid", 422)


class NotFound(ExpertlineError):
    def __init__(self, message: str) -> None:
        super().__init__(message, [], "not_found", 404)


class Conflict(ExpertlineError):
    def __init__(self, message: str) -> None:
        super().__init__(message, [], "conflict", 409)


class Unauthorized(ExpertlineError):
    def __init__(self, message: str = "a bearer token is required") -> None:
        super().__init__(message, [], "unauthorized", 401)


class Forbidden(ExpertlineError):
    def __init__(self, message: str) -> None:
        super().__init__(message, [], "forbidden", 403)


class TooLarge(ExpertlineError):
    def __init__(self, limit: int) -> None:
        message = f"the request body is over {limit:,} bytes; nothing was done"
        super().__init__(message, [], "too_large", 413)


class Unavailable(ExpertlineError):
    """This node cannot do it now (runtime stopped or starting, an HA standby, the database
    unreachable): HTTP 503, SIP 503 with Retry-After. ``retry_after`` is a hint in seconds."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message, [], "unavailable", 503)
        self.retry_after = retry_after


# --- the problem JSON, as the HTTP API documents it --------------------------------------------


class ProblemItem(BaseModel):
    path: str = Field(
        description="Where the problem is: a body path (queues[2].select), a "
        "parameter (query.wait), or empty for the whole request."
    )
    message: str


class ProblemBody(BaseModel):
    code: str = Field(
        description="Stable code: invalid, not_found, conflict, unauthorized, "
        "forbidden, too_large, unavailable, method_not_allowed, ..."
    )
    message: str = Field(description="One line that says what is wrong.")
    details: list[ProblemItem] | None = Field(
        default=None, description="Each problem of an invalid input."
    )


class ProblemResponse(BaseModel):
    """Every refusal of the HTTP API: ``{"error": {code, message, details?}}``."""

    error: ProblemBody


PROBLEM_STATUSES: dict[int, str] = {
    400: "Bad request",
    401: "No bearer token, or an unknown or revoked one",
    403: "The token's role may not call this endpoint",
    404: "Not found",
    405: "Method not allowed (see the Allow header)",
    409: "Conflict with the current state",
    413: "The request body is too large",
    422: "Invalid request: body, parameters or content type (each problem listed)",
    503: "Unavailable on this node (standby, role not running, schema not current)",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for refusals with the problem JSON schema."""
    return {
        status: {"model": ProblemResponse, "description": PROBLEM_STATUSES[status]}
        for status in statuses
    }
