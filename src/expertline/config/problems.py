"""One object's own problems: pydantic's errors as path-named problems, and what can still be
read of an object that has them (``salvage``), so the checks of the whole document run on it
too and one pass reports every problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from expertline.config.yamlio import format_path
from expertline.errors import Problem, clip


def pydantic_problems(exc: ValidationError, prefix: tuple[str | int, ...]) -> list[Problem]:
    """Pydantic errors as path-named problems with short messages."""
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p != "__root__")
        kind = err["type"]
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "required"
        elif kind == "string_type":
            message = f"expected text, got {describe(err.get('input'))} (quote it)"
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            message = f"expected a mapping, got {describe(err.get('input'))}"
        elif kind == "literal_error":
            message = f"got {clip(err.get('input'))}; expected {err.get('ctx', {}).get('expected')}"
        elif kind == "string_pattern_mismatch":
            message = f"{clip(err.get('input'))} has characters that are not allowed"
        elif kind in ("int_type", "bool_type", "int_parsing", "bool_parsing", "float_type"):
            wanted = "true or false" if kind.startswith("bool") else "a whole number"
            message = f"expected {wanted}, got {describe(err.get('input'))}"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
        out.append(Problem(format_path((*prefix, *loc)), message))
    return out


def describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and not math.isfinite(value):
        shown = ".nan" if value != value else (".inf" if value > 0 else "-.inf")
        return f"{shown} (not a finite number)"
    if isinstance(value, int | float):
        return f"the number {clip(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return clip(value)


@dataclass(frozen=True, slots=True)
class Salvaged:
    """What can still be checked of an object that failed its own validation."""

    obj: BaseModel | None  # valid apart from unknown keys, or the fields valid on their own
    complete: bool  # obj is valid once its unknown keys are set aside
    problems: list[Problem] = field(default_factory=list)  # shown once those keys were set aside
    bad: frozenset[str] = frozenset()  # top-level fields that failed (absent from obj)
    errors: list[Any] = field(default_factory=list)  # pydantic's errors for those fields


def salvage(
    model: type[BaseModel], item: Any, exc: ValidationError, prefix: tuple[str | int, ...]
) -> Salvaged:
    """The object as far as it can be read, so its other problems show in the same pass.

    Unknown keys are set aside and the rest validated again: checks that relate fields (a
    list attribute needs values; a presence source needs a JID or a component) run only
    once every field is valid, so an unknown key would hide them. If fields are still bad,
    the object keeps the fields that are valid on their own and ``None`` for the rest;
    such an object is only ever checked, never applied (the document has problems).
    """
    if not isinstance(item, dict):
        return Salvaged(None, False)
    errors = exc.errors(include_url=False)
    stripped = _without_unknown_keys(item, errors)
    if stripped is not None:
        try:
            return Salvaged(model.model_validate(stripped), True)
        except ValidationError as again:
            seen = set(pydantic_problems(exc, prefix))
            more = [p for p in pydantic_problems(again, prefix) if p not in seen]
            errors = again.errors(include_url=False)
            item = stripped
    else:
        more = []
    bad = frozenset(str(err["loc"][0]) for err in errors if err["loc"])
    values: dict[str, Any] = {
        name: None for name, info in model.model_fields.items() if info.is_required()
    }
    for name, value in item.items():
        if name in model.model_fields and name not in bad:
            try:
                values[name] = _field_adapter(model, name).validate_python(value)
            except ValidationError:  # a field validator of the model: leave the field out
                continue
    return Salvaged(model.model_construct(**values), False, more, bad, errors)


def _without_unknown_keys(item: dict[str, Any], errors: list[Any]) -> dict[str, Any] | None:
    """A copy of ``item`` without the keys pydantic called unknown (None if there are none)."""
    unknown = [tuple(err["loc"]) for err in errors if err["type"] == "extra_forbidden"]
    if not unknown:
        return None
    copy: Any = _copy_containers(item)
    for loc in unknown:
        parent = copy
        try:
            for key in loc[:-1]:
                parent = parent[key]
            del parent[loc[-1]]
        except (KeyError, IndexError, TypeError):
            continue
    return dict(copy)


def _copy_containers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_containers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_containers(v) for v in value]
    return value


@cache
def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """Validates one field of ``model`` on its own (type and constraints, not defaults)."""
    info = model.model_fields[name]
    kind: Any = info.annotation
    if info.metadata:
        kind = Annotated[(kind, *info.metadata)]
    return TypeAdapter(kind)
