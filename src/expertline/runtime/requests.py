"""The checks of a task request, whichever way it came in (HTTP, SIP, tests)."""

from __future__ import annotations

from expertline import limits
from expertline.errors import Problem
from expertline.runtime.ports import TaskRequest
from expertline.runtime.webhooks import callback_url_problem


def validate_request(request: TaskRequest) -> list[Problem]:
    """Every problem with a request: the same limits as the HTTP model and the database
    columns (``expertline.limits``)."""
    problems: list[Problem] = []
    if (request.entry_point is None) == (request.queue is None):
        problems.append(Problem("", "give exactly one of entry_point or queue"))
    if request.channel not in ("voice", "chat"):
        problems.append(Problem("channel", "must be voice or chat"))
    low, high = limits.PRIORITY
    if request.priority is not None and (
        isinstance(request.priority, bool)
        or not isinstance(request.priority, int)
        or not low <= request.priority <= high
    ):
        problems.append(Problem("priority", f"must be a whole number between {low} and {high}"))
    problems += limits.request_problems(
        {
            "entry_point": request.entry_point,
            "queue": request.queue,
            "caller": request.caller,
            "external_id": request.external_id,
            "callback_url": request.callback_url,
        }
    )
    if isinstance(request.callback_url, str) and not any(
        p.path == "callback_url" for p in problems
    ):
        why = callback_url_problem(request.callback_url)
        if why:
            problems.append(Problem("callback_url", why))
    if isinstance(request.attributes, dict):
        problems += limits.attribute_problems(request.attributes)
    else:
        problems.append(Problem("attributes", "must be an object of names and values"))
    return problems
