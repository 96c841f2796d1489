"""The bounds of every value that enters from outside and ends up in a stored row.

One table, read by the edges (HTTP models, SIP requests, IM answers, configuration) and by the
database tables, so that a value accepted at an edge always fits its column: a request is
refused with a clear error where it arrives, never later by the database inside a batch that
also holds other callers' work.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from expertline.errors import Problem


@dataclass(frozen=True)
class TextLimit:
    """A text value: at most ``max_chars`` characters, never NUL or another C0 control
    character (tab, newline and carriage return excepted; PostgreSQL refuses NUL in text)
    and never half of a UTF-16 surrogate pair (no database can encode it)."""

    max_chars: int
    min_chars: int = 1


# Column widths, the single source for ``db/tables.py`` and the edges.
ID = TextLimit(255)  # expert, queue, node, token names: ``String(255)`` columns
TASK_ID = TextLimit(64)  # generated ids: ``String(64)``
CODE = TextLimit(32)  # task and offer codes: ``String(32)``
EXTERNAL_ID = TextLimit(255)  # the routing client's id (RCD/TCD ``router_call_key``)
CALLER = TextLimit(255, min_chars=0)  # ANI: TCD ``ani`` is ``String(255)``
DIALED_NUMBER = TextLimit(128)  # entry point / route key; TCD ``dialed_number`` is wider
LABEL = TextLimit(255)  # a phone or SIP URI returned as label (an expert's ``phone`` too)
URL = TextLimit(2000)  # webhook URLs
ATTRIBUTE_NAME = TextLimit(64)
ATTRIBUTE_VALUE = TextLimit(256, min_chars=0)  # one text attribute value (or list item)
MAX_ATTRIBUTES = 100  # attributes on one task
MAX_LIST_ITEMS = 100  # items of one list attribute value
INTEGER = (-(2**63), 2**63 - 1)  # whole-number attribute values: what every JSON tool reads
PRIORITY = (-1000, 1000)
MAX_NESTING = 64  # objects and lists inside each other in a request or a configuration file
CONFIG_VERSION = (1, 2**31 - 1)  # ``config_versions.version``: Integer (int4 on PostgreSQL)

# The text fields of a task request (HTTP ``POST /api/v1/tasks``, the SIP front, any caller
# of the runtime), by their API names. ``docs/api.md`` shows this table (``markdown_table``).
TASK_REQUEST: dict[str, TextLimit] = {
    "entry_point": DIALED_NUMBER,
    "queue": ID,
    "caller": CALLER,
    "external_id": EXTERNAL_ID,
    "callback_url": URL,
}

_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def text_problem(value: str, limit: TextLimit) -> str | None:
    """Why ``value`` breaks ``limit`` (None when it fits). Never echoes the value itself."""
    if len(value) < limit.min_chars:
        return "must not be empty" if limit.min_chars == 1 else f"needs {limit.min_chars}+ chars"
    if len(value) > limit.max_chars:
        return f"is {len(value):,} characters; at most {limit.max_chars:,} are allowed"
    bad = _UNSTORABLE.search(value)
    if bad is not None:
        if ord(bad.group()) >= 0xD800:
            return "contains a lone surrogate (not valid Unicode)"
        return "contains a control character (NUL or another below U+0020)"
    return None


def has_control(value: str) -> bool:
    """NUL or a C0 control character other than tab, newline and carriage return, or a lone
    surrogate (text that is not Unicode: no database encodes it)."""
    return _UNSTORABLE.search(value) is not None


def fits(value: Any, limit: TextLimit) -> bool:
    """Whether ``value`` is text within ``limit`` (``text_problem`` says why not)."""
    return (
        value.__class__ is str
        and limit.min_chars <= len(value) <= limit.max_chars
        and (value.isprintable() or _UNSTORABLE.search(value) is None)  # the first is faster
    )


def number_problem(value: float) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        low, high = INTEGER
        return None if low <= value <= high else "is out of range (at most 64 bits)"
    return None if math.isfinite(value) else "must be a finite number (not NaN or Infinity)"


def request_problems(fields: dict[str, str | None]) -> list[Problem]:
    """Every problem with the text fields of a task request (``TASK_REQUEST``); None is absent."""
    problems: list[Problem] = []
    for name, value in fields.items():
        if value is None or fits(value, TASK_REQUEST[name]):
            continue
        why = text_problem(value, TASK_REQUEST[name]) if isinstance(value, str) else "must be text"
        if why:
            problems.append(Problem(name, why))
    return problems


def attribute_problems(attributes: dict[str, Any], path: str = "attributes") -> list[Problem]:
    """Every problem with a task's attributes: names, text values, numbers, list items."""
    if len(attributes) <= MAX_ATTRIBUTES and all(
        fits(name, ATTRIBUTE_NAME) and _plain_value_fits(value)
        for name, value in attributes.items()
    ):
        return []  # the usual case, checked without building anything
    problems: list[Problem] = []
    if len(attributes) > MAX_ATTRIBUTES:
        problems.append(Problem(path, f"at most {MAX_ATTRIBUTES} attributes are allowed"))
    for i, (name, value) in enumerate(attributes.items()):
        why = text_problem(name, ATTRIBUTE_NAME) if isinstance(name, str) else "must be text"
        if why:  # the path does not echo a name that is itself the problem
            problems.append(Problem(f"{path}[{i}]", f"name {why}"))
            continue
        problems.extend(_value_problems(value, f"{path}.{name}"))
    return problems


def attribute_value_problem(value: Any) -> str | None:
    """The first problem with one attribute value (the HTTP model's check), or None."""
    if _plain_value_fits(value):
        return None
    found = _value_problems(value, "")
    return None if not found else str(found[0])


def _plain_value_fits(value: Any) -> bool:
    """A text, number or boolean attribute value within its limits (lists: ask further)."""
    kind = value.__class__
    if kind is str:
        return fits(value, ATTRIBUTE_VALUE)
    if kind is int:
        return INTEGER[0] <= value <= INTEGER[1]
    if kind is float:
        return math.isfinite(value)
    return kind is bool


def _value_problems(value: Any, where: str) -> list[Problem]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        why = number_problem(value)
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


def _text_row(field: str, limit: TextLimit) -> str:
    return (
        f"| {field} | text of {limit.min_chars}..{limit.max_chars:,} characters, "
        "no control characters |"
    )


def markdown_table() -> str:
    """The limits of the routing client's inputs as a Markdown table (``docs/api.md``)."""
    rows = ["| field | limit |", "|---|---|"]
    rows += [_text_row(f"`{name}`", limit) for name, limit in TASK_REQUEST.items()]
    rows += [
        f"| `priority` | a whole number, {PRIORITY[0]:,}..{PRIORITY[1]:,} |",
        f"| `attributes` | at most {MAX_ATTRIBUTES} names |",
        _text_row("an attribute's name", ATTRIBUTE_NAME),
        f"| an attribute's value | text of 0..{ATTRIBUTE_VALUE.max_chars} characters with no "
        "control characters, a finite number (not NaN or Infinity; a whole number within "
        f"64 bits), a boolean, or a list of at most {MAX_LIST_ITEMS} such texts |",
        _text_row("`phone` (accepting an offer)", LABEL),
    ]
    return "\n".join(rows) + "\n"


def render_docs(text: str) -> str:
    """``text`` (``docs/api.md``) with its limits table replaced by ``markdown_table()``."""
    start = text.index(DOCS_START) + len(DOCS_START)
    end = text.index(DOCS_END)
    return text[:start] + "\n" + markdown_table() + text[end:]


DOCS_START = "<!-- limits: generated from expertline/limits.py by `python -m expertline.limits` -->"
DOCS_END = "<!-- end of limits -->"


if __name__ == "__main__":  # rewrite the table in docs/api.md (from the repository's root)
    from pathlib import Path

    doc = Path("docs/api.md")
    doc.write_text(render_docs(doc.read_text()))


# --- expert attribute values ------------------------------------------------------------------
# The rules an expert's attribute value follows, wherever it is checked: the configuration's
# validation and the eligibility columns that store it.

PROFICIENCY_MIN, PROFICIENCY_MAX = 1, 100  # an expert's level in a skill they list


def is_proficiency(value: Any) -> bool:
    """A whole number from 1 to 100 (not a boolean)."""
    return type(value) is int and PROFICIENCY_MIN <= value <= PROFICIENCY_MAX


def is_attribute_number(value: Any) -> bool:
    """A finite number (not a boolean, not NaN or Infinity)."""
    return type(value) in (int, float) and math.isfinite(value)
