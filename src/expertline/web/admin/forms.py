"""HTML forms for configuration objects, drawn from the schema's own models.

Each field of a model (``config.schema``) becomes one input: text for strings, a choice for
literals, a checkbox for booleans, and YAML for the rest (numbers, durations, lists, maps,
nested objects), read exactly as ``config import`` reads YAML. A submitted form becomes plain
data, then the model validates it and ``check_document`` checks it in its document — the same
two passes as an imported file — and each problem is put back at the field it names.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from expertline.config.export import object_body
from expertline.config.problems import pydantic_problems, salvage
from expertline.config.schema import ConfigDocument, MessageSet, object_id
from expertline.config.validate import check_document
from expertline.config.yamlio import dump_yaml, parse_yaml, resolve_plain
from expertline.errors import Problem

Kind = Literal["text", "choice", "bool", "yaml"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: Kind
    required: bool
    hint: str
    choices: tuple[str, ...] = ()
    multiline: bool = False
    default: str = ""

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


@dataclass
class FormState:
    """What a form shows: each field's text, and the problems found, by field."""

    values: dict[str, str]
    errors: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.general

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "fields": self.errors, "general": self.general}


def _plain(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``None``, whether None was allowed)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        return annotation, True
    return annotation, False


def fields_of(model: type[BaseModel]) -> list[FieldSpec]:
    specs = []
    for name, info in model.model_fields.items():
        annotation, _ = _plain(info.annotation)
        hint = info.description or ""
        required = info.is_required()
        default = "" if required else _default_text(info)
        if get_origin(annotation) is Literal:
            choices = tuple(str(a) for a in get_args(annotation))
            specs.append(FieldSpec(name, "choice", required, hint, choices, default=default))
        elif annotation is bool:
            specs.append(FieldSpec(name, "bool", required, hint, default=default))
        elif annotation is str:
            specs.append(FieldSpec(name, "text", required, hint, default=default))
        else:
            multiline = get_origin(annotation) in (dict, list) or (
                isinstance(annotation, type) and issubclass(annotation, BaseModel)
            )
            if name in ("values", "on_max_wait"):  # short: one line of flow YAML
                multiline = False
            specs.append(
                FieldSpec(name, "yaml", required, hint, multiline=multiline, default=default)
            )
    return specs


def _default_text(info: Any) -> str:
    try:
        value = info.get_default(call_default_factory=True)
    except Exception:
        return ""
    if value is None:
        return ""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, float) and value.is_integer():
        from expertline.config.schema import format_duration

        return format_duration(value)  # every float default of the schema is a duration
    return _one_line(value)


def _one_line(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if resolve_plain(value) == value else json.dumps(value)
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def values_of(
    specs: list[FieldSpec], obj: BaseModel | None, extra: dict[str, Any] | None = None
) -> dict[str, str]:
    """Each field's text for an existing object (canonical: defaults left empty)."""
    body = dict(extra or {})
    if obj is not None:
        body.update(object_body(obj))
    out = {}
    for spec in specs:
        if spec.name not in body:
            out[spec.name] = ""
            continue
        value = body[spec.name]
        if spec.kind == "bool":
            out[spec.name] = "true" if value else "false"
        elif spec.kind in ("text", "choice"):
            out[spec.name] = str(value)
        elif spec.multiline and isinstance(value, dict | list) and value:
            out[spec.name] = dump_yaml(value).rstrip("\n")
        else:
            out[spec.name] = _one_line(value)
    return out


def submitted(specs: list[FieldSpec], form: FormData) -> FormState:
    """The texts of a submitted form."""
    values = {}
    for spec in specs:
        raw = form.get(spec.name)
        if spec.kind == "bool":
            values[spec.name] = "true" if raw in ("true", "on", "1") else "false"
        else:
            values[spec.name] = str(raw or "").replace("\r\n", "\n")
    return FormState(values)


def data_of(specs: list[FieldSpec], state: FormState) -> dict[str, Any]:
    """Plain data from the texts (empty = the default); YAML problems go to their field."""
    data: dict[str, Any] = {}
    for spec in specs:
        text = state.values.get(spec.name, "")
        if spec.kind == "bool":
            data[spec.name] = text == "true"
            continue
        if not text.strip():
            continue
        if spec.kind in ("text", "choice"):
            data[spec.name] = text.strip() if spec.kind == "choice" else text.rstrip()
            continue
        value, problems = parse_yaml(text)
        if problems:
            state.errors.setdefault(spec.name, []).extend(p.message for p in problems)
        else:
            data[spec.name] = value
    return data


def build(model: type[BaseModel], specs: list[FieldSpec], state: FormState) -> BaseModel | None:
    """The object, or None with the problems in ``state``."""
    return _build(model, specs, state)[0]


def build_for_check(
    model: type[BaseModel], specs: list[FieldSpec], state: FormState
) -> tuple[BaseModel | None, frozenset[str]]:
    """The object, or, when its own fields have problems (in ``state``), the object as far
    as it can be read (``problems.salvage``) with the names of the fields that failed: the
    document's checks still run on the rest, so one check shows every problem."""
    obj, exc, data = _build(model, specs, state)
    if obj is not None or exc is None or issubclass(model, MessageSet):
        return obj, frozenset()
    saved = salvage(model, data, exc, ())
    place(state, saved.problems, "")
    return saved.obj, saved.bad


def _build(
    model: type[BaseModel], specs: list[FieldSpec], state: FormState
) -> tuple[BaseModel | None, ValidationError | None, dict[str, Any]]:
    data = data_of(specs, state)
    if state.errors:
        return None, None, data
    try:
        return model.model_validate(data), None, data
    except ValidationError as exc:
        place(state, pydantic_problems(exc, ()), "")
        return None, exc, data


def place(state: FormState, problems: list[Problem], prefix: str) -> None:
    """Put each problem at the field its path names (``prefix`` is the object's own path in
    the document, such as ``queues[3]``)."""
    names = set(state.values)
    for problem in problems:
        path = problem.path
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :].lstrip(".")
        head = path.split(".")[0].split("[")[0]
        if head in names:
            rest = path[len(head) :].lstrip(".")
            state.errors.setdefault(head, []).append(
                f"{rest}: {problem.message}" if rest else problem.message
            )
        else:
            state.general.append(str(problem))


def document_problems(
    doc: ConfigDocument, section: str, obj: BaseModel, oid: str | None, locale: str | None = None
) -> tuple[list[Problem], str]:
    """What ``check_document`` says about the document with this object added (``oid`` None)
    or replaced, and the object's path prefix. Experts are checked against the attributes and
    presence sources (nothing refers to an expert); other objects against a document without
    experts, which no other object's checks look at."""
    if section == "messages":
        return [], ""
    data = {s: getattr(doc, s) for s in ("attributes", "queues", "entry_points", "presence")}
    data["experts"] = []
    data["messages"] = {}
    if section == "experts":
        data = {**data, "queues": [], "entry_points": [], "experts": [obj]}
        probe = ConfigDocument.model_construct(**data)
        index = _index(doc, section, oid)
        positions = {"experts": [index]}
        return list(check_document(probe, positions=positions)), f"experts[{index}]"
    items = list(data[section])
    index = _index(doc, section, oid)
    if oid is None:
        items.append(obj)
    else:
        items[index] = obj
    data[section] = items
    probe = ConfigDocument.model_construct(**data)
    return list(check_document(probe)), f"{section}[{index}]"


def _index(doc: ConfigDocument, section: str, oid: str | None) -> int:
    items = getattr(doc, section)
    if oid is None:
        return len(items)
    for i, item in enumerate(items):
        if object_id(section, item) == oid:
            return i
    return len(items)


def split_message_set(obj: BaseModel) -> tuple[str, MessageSet]:
    data = obj.model_dump(exclude_none=True)
    locale = data.pop("locale")
    return str(locale), MessageSet.model_validate(data)
