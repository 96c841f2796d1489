"""The bounds of every value that enters from outside and ends up in a stored row.

One table, read by the edges (HTTP models, SIP requests, IM answers, configuration) and by the
database tables, so that a value accepted at an edge always fits its column: a request is
refused with a clear error where it arrives, never later by the database inside a batch that
also holds other callers' work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from expertline.errors import Problem


@dataclass(frozen=True)
class TextLimit:
    """A text value: at most ``max_chars`` characters, never NUL or another C0 control
    character (tab excepted); PostgreSQL refuses NUL in text and in JSON."""

    max_chars: int
    min_chars: int = 1


# Column widths, the single source for ``db/tables.py`` and the edges.
ID = TextLimit(255)  # expert, queue, node, token names: ``String(255)`` columns
TASK_ID = TextLimit(64)  # generated ids: ``String(64)``
CODE = TextLimit(32)  # task and offer codes: ``String(32)``
EXTERNAL_ID = TextLimit(255)  # the routing client's id (RCD/TCD ``router_call_key``)
CALLER = TextLimit(255)  # ANI: TCD ``ani`` is ``String(255)``
DIALED_NUMBER = TextLimit(128)  # entry point / route key; TCD ``dialed_number`` is wider
LABEL = TextLimit(255)  # a phone or SIP URI returned as label
URL = TextLimit(2000)  # webhook URLs
ATTRIBUTE_NAME = TextLimit(64)
ATTRIBUTE_VALUE = TextLimit(256, min_chars=0)  # one text attribute value (or list item)
MAX_ATTRIBUTES = 100  # attributes on one task
MAX_LIST_ITEMS = 100  # items of one list attribute value
PRIORITY = (-1000, 1000)
MAX_NESTING = 64  # objects and lists inside each other in a request or a configuration file
CONFIG_VERSION = (1, 2**31 - 1)  # ``config_versions.version``: Integer (int4 on PostgreSQL)


def text_problem(value: str, limit: TextLimit) -> str | None:
    """Why ``value`` breaks ``limit`` (None when it fits). Never echoes the value itself."""
    if len(value) < limit.min_chars:
        return "must not be empty" if limit.min_chars == 1 else f"needs {limit.min_chars}+ chars"
    if len(value) > limit.max_chars:
        return f"is {len(value):,} characters; at most {limit.max_chars:,} are allowed"
    if has_control(value):
        return "contains a control character (NUL or another below U+0020)"
    return None


def has_control(value: str) -> bool:
    """NUL or a C0 control character other than tab, newline and carriage return."""
    return any(ord(ch) < 0x20 and ch not in "\t\n\r" for ch in value)


def number_problem(value: float) -> str | None:
    return None if math.isfinite(value) else "must be a finite number (not NaN or Infinity)"


def attribute_problems(attributes: dict[str, Any], path: str = "attributes") -> list[Problem]:
    """Every problem with a task's attributes: names, text values, numbers, list items."""
    problems: list[Problem] = []
    if len(attributes) > MAX_ATTRIBUTES:
        problems.append(Problem(path, f"at most {MAX_ATTRIBUTES} attributes are allowed"))
    for name, value in attributes.items():
        where = f"{path}.{name[: ATTRIBUTE_NAME.max_chars]}"
        why = text_problem(name, ATTRIBUTE_NAME) if isinstance(name, str) else "must be text"
        if why:
            problems.append(Problem(where, f"name {why}"))
            continue
        problems.extend(_value_problems(value, where))
    return problems


def _value_problems(value: Any, where: str) -> list[Problem]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        why = number_problem(float(value))
        return [Problem(where, why)] if why else []
    if isinstance(value, str):
        why = text_problem(value, ATTRIBUTE_VALUE)
        return [Problem(where, why)] if why else []
    if isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            return [Problem(where, f"at most {MAX_LIST_ITEMS} items are allowed")]
        out: list[Problem] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                out.append(Problem(f"{where}[{i}]", "list items must be text"))
                continue
            why = text_problem(item, ATTRIBUTE_VALUE)
            if why:
                out.append(Problem(f"{where}[{i}]", why))
        return out
    return [Problem(where, "must be text, a number, a boolean or a list of text")]
