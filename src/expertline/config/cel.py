"""CEL selections: compile and type-check queue ``select`` expressions against the attributes.

Every declared attribute is a typed CEL variable (proficiency -> int, number -> double,
boolean -> bool, string -> string, list -> list(string)); a selection must type-check and be
boolean. Checking is strict, as CEL is: ``rating > 3`` on a number attribute is an error
(write ``rating > 3.0``). Compilation is cached per distinct expression, so a document with
many queues sharing a selection costs one compile.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from cel_expr_python import cel  # type: ignore[import-untyped]

from expertline.config.schema import Attribute
from expertline.errors import InvalidInput, Problem

CEL_TYPES: dict[str, Any] = {
    "proficiency": cel.Type.INT,
    "number": cel.Type.DOUBLE,
    "boolean": cel.Type.BOOL,
    "string": cel.Type.STRING,
    "list": cel.Type.List(cel.Type.STRING),
}

_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")
_EXPECTING = re.compile(r" expecting \{.*\}$")


class SelectionError(ValueError):
    """A selection that does not compile, does not type-check, or is not boolean."""


def short_error(text: str, raw: str) -> str:
    """CEL's multi-line diagnostic as one line: ``column 9: no matching overload ...``."""
    found = _ERROR.findall(raw)
    if not found:
        return raw.strip().splitlines()[0] if raw.strip() else "does not compile"
    multiline = "\n" in text
    parts = []
    for line, column, message in found[:2]:
        where = f"line {line}, column {column}" if multiline else f"column {column}"
        message = message.replace(" (in container '')", "").strip()
        message = _EXPECTING.sub("", message)
        parts.append(f"{where}: {message}")
    if len(found) > 2:
        parts.append(f"and {len(found) - 2} more")
    return "; ".join(parts)


class SelectionCompiler:
    """Compiles selections for one set of attribute declarations, once per distinct text."""

    def __init__(self, attributes: Iterable[Attribute], untyped: Iterable[str] = ()) -> None:
        """``untyped`` names are declared as ``dyn``: known to exist, type unknown. So is an
        attribute whose own type failed validation (salvaged with no type)."""
        self.variables = {a.name: CEL_TYPES.get(a.type, cel.Type.DYN) for a in attributes}
        for name in untyped:
            self.variables.setdefault(name, cel.Type.DYN)
        self._env = cel.NewEnv(variables=self.variables)
        self._cache: dict[str, Any] = {}

    def compile(self, text: str) -> Any:
        """The compiled expression; SelectionError with a short, positioned message."""
        hit = self._cache.get(text)
        if hit is None:
            try:
                expr = self._env.compile(text)
            except RuntimeError as exc:
                hit = SelectionError(short_error(text, str(exc)))
            else:
                result = expr.return_type()
                if result != cel.Type.BOOL:
                    hit = SelectionError(f"must be boolean, but is {_type_name(result)}")
                else:
                    hit = expr
            self._cache[text] = hit
        if isinstance(hit, SelectionError):
            raise hit
        return hit

    def check(self, text: str) -> str | None:
        """None when the selection is good, else the error message."""
        try:
            self.compile(text)
        except SelectionError as exc:
            return str(exc)
        return None

    def matches(self, text: str, values: Mapping[str, Any]) -> bool:
        """Evaluate a selection over one expert's attribute values (defaults filled in)."""
        value = self.compile(text).eval(data=dict(values)).value()
        if not isinstance(value, bool):
            # Evaluation errors (e.g. overflow) surface as non-boolean values: no match.
            return False
        return value


def compile_selection(attributes: Iterable[Attribute], text: str, path: str = "select") -> Any:
    """Compile one selection or raise InvalidInput naming ``path``."""
    try:
        return SelectionCompiler(attributes).compile(text)
    except SelectionError as exc:
        raise InvalidInput(f"bad selection at {path}", [Problem(path, str(exc))]) from exc


def _type_name(kind: Any) -> str:
    name = getattr(kind, "name", None)
    text = name() if callable(name) else name
    return str(text or kind).lower()
