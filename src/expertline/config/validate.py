"""From YAML text to a validated ``ConfigDocument``, listing every problem with its YAML path.

Validation runs in three passes so one mistake does not hide the others:

1. YAML: syntax, duplicate mapping keys (rejected, not silently overwritten), merge keys.
2. Each object on its own against its pydantic model (types, ranges, unknown keys).
3. The whole document: duplicate ids, references between objects, expert attribute values
   against the declared attribute types, CEL selections (compiled once per distinct text).

An object that fails pass 2 still takes part in pass 3 with what can be read of it
(``problems.salvage``): its unknown keys are set aside and it is validated again (so the
checks that relate its fields run), and otherwise the fields that are valid on their own are
kept. Its id then counts for duplicates and references, its attribute values and selections
are checked: one pass reports every problem. Pass 3 never reports a second, derived error for
a field that failed in pass 2.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from expertline.config.cel import CEL_TYPES, SelectionCompiler
from expertline.config.problems import describe, pydantic_problems, salvage
from expertline.config.schema import (
    LOCALE_PATTERN,
    SECTIONS,
    Attribute,
    ConfigDocument,
    EntryPoint,
    Expert,
    MessageSet,
    PresenceSource,
    Queue,
)
from expertline.config.yamlio import deep_problem, format_path, locate, parse_yaml
from expertline.errors import InvalidInput, Problem, clip
from expertline.limits import (
    MAX_NESTING,
    PROFICIENCY_MAX,
    PROFICIENCY_MIN,
    is_attribute_number,
    is_proficiency,
)

log = logging.getLogger(__name__)

SECTION_MODELS: dict[str, type[BaseModel]] = {
    "attributes": Attribute,
    "experts": Expert,
    "queues": Queue,
    "entry_points": EntryPoint,
    "presence": PresenceSource,
}
ID_FIELDS: dict[str, str] = {
    "attributes": "name",
    "experts": "id",
    "queues": "id",
    "entry_points": "dialed_number",
    "presence": "id",
}
_LOCALE = re.compile(LOCALE_PATTERN)

# --- documents ----------------------------------------------------------------------------------


def load_yaml(text: str) -> ConfigDocument:
    """YAML text -> a valid document, or InvalidInput listing every problem."""
    doc, problems = check_yaml(text)
    if doc is None:
        raise InvalidInput(_header(problems), problems)
    return doc


def check_yaml(text: str) -> tuple[ConfigDocument | None, list[Problem]]:
    """Every YAML and document problem at once; (document, []) when there are none."""
    data, problems = parse_yaml(text)
    if data is None and problems:
        return None, problems
    doc, more = validate_document(data)
    if problems or more:
        return None, sorted([*problems, *more], key=_document_order)
    return doc, []


def with_lines(text: str, problems: list[Problem], limit: int = 1000) -> list[Problem]:
    """The problems with `` (line N)`` added where the path (or its parent) is in ``text``."""
    if len(problems) > limit:
        return problems
    lines = locate(text, [p.path for p in problems if " line " not in p.message])
    return [
        Problem(p.path, f"{p.message} (line {lines[p.path]})") if p.path in lines else p
        for p in problems
    ]


def require_valid(raw: Any) -> ConfigDocument:
    doc, problems = validate_document(raw)
    if doc is None:
        raise InvalidInput(_header(problems), problems)
    return doc


def _header(problems: list[Problem]) -> str:
    n = len(problems)
    return f"the configuration has {n} problem{'s' if n != 1 else ''}; nothing was applied"


def validate_document(raw: Any) -> tuple[ConfigDocument | None, list[Problem]]:
    """Validate plain data (parsed YAML or JSON). Returns (document, []) or (None, problems)."""
    if raw is None:
        return None, [Problem("", "the document is empty")]
    if not isinstance(raw, dict):
        return None, [Problem("", "the document must be a mapping of sections")]
    deep = _too_deep(raw)
    if deep is not None:
        return None, [deep_problem(deep)]
    reading = _Reading()
    problems = reading.problems
    for key in raw:
        if key not in SECTIONS:
            problems.append(
                Problem(
                    format_path([str(key)]), f"unknown section (expected: {', '.join(SECTIONS)})"
                )
            )
    sections: dict[str, Any] = {}
    for section, model in SECTION_MODELS.items():
        items = raw.get(section)
        if items is not None and not isinstance(items, list):
            problems.append(Problem(section, "must be a list"))
        sections[section] = reading.objects(section, model, items) if items else []
    sections["messages"] = _message_sets(raw.get("messages"), problems)
    doc = ConfigDocument.model_construct(**sections)
    # A field that failed on its own is not reported again by the whole-document checks
    # (``skill`` is bad: not also "required when order is most_skilled").
    problems.extend(
        p
        for p in check_document(doc, reading.failed, reading.positions, reading.stray_selects)
        if p.path not in reading.failed_paths
    )
    if problems:
        problems.sort(key=_document_order)
        log.info("config validation rejected the document problems=%d", len(problems))
        return None, problems
    return doc, []


@dataclass(slots=True)
class _Reading:
    """The objects of a document read one by one, with what the document checks need to
    know of those that failed their own validation."""

    problems: list[Problem] = field(default_factory=list)
    failed: dict[str, set[str]] = field(default_factory=lambda: {s: set() for s in SECTIONS})
    failed_paths: set[str] = field(default_factory=set)  # fields that failed on their own
    positions: dict[str, list[int]] = field(default_factory=dict)
    # Selections of escalation steps of queues whose steps failed validation are still
    # type-checked (a bad duration does not hide a bad CEL in the same queue).
    stray_selects: list[tuple[str, str]] = field(default_factory=list)

    def objects(self, section: str, model: type[BaseModel], items: Any) -> list[Any]:
        """The section's objects to check: the valid ones and what can be read of the rest."""
        if not isinstance(items, list):
            return []
        good: list[Any] = []
        where = self.positions[section] = []
        for i, item in enumerate(items):
            try:
                good.append(model.model_validate(item))
                where.append(i)
            except ValidationError as exc:
                obj = self._failed(section, model, i, item, exc)
                if obj is not None:
                    good.append(obj)
                    where.append(i)
        if section == "attributes":
            self.problems.extend(_failed_duplicates(items, where, ID_FIELDS[section], section))
        return good

    def _failed(
        self, section: str, model: type[BaseModel], i: int, item: Any, exc: ValidationError
    ) -> BaseModel | None:
        own = pydantic_problems(exc, (section, i))
        saved = salvage(model, item, exc, (section, i))
        own.extend(saved.problems)
        self.problems.extend(own)
        self.failed_paths.update(p.path for p in own)
        id_field = ID_FIELDS[section]
        if not saved.complete and isinstance(item, dict):
            if isinstance(item.get(id_field), str | int):
                self.failed[section].add(str(item[id_field]))
            if section == "queues" and "escalate" in saved.bad:
                self.stray_selects.extend(_raw_selects(item, i, saved.errors))
        if saved.complete or section != "attributes":
            # Checked with the others. A half-read attribute stays out (its type drives the
            # value checks); its name counts as declared (``failed``).
            return saved.obj
        return None


def _too_deep(raw: Any) -> list[str | int] | None:
    """The path of a container nested deeper than ``MAX_NESTING`` (None if there is none);
    iterative, so hostile input cannot exhaust the stack."""
    level: list[tuple[list[str | int], Any]] = [([], raw)]
    for _ in range(MAX_NESTING):
        deeper: list[tuple[list[str | int], Any]] = []
        for path, node in level:
            items = node.items() if isinstance(node, dict) else enumerate(node)
            deeper.extend(
                ([*path, key], child) for key, child in items if isinstance(child, dict | list)
            )
        if not deeper:
            return None
        level = deeper
    return level[0][0]


def _message_sets(raw: Any, problems: list[Problem]) -> dict[str, MessageSet]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(Problem("messages", "must be a mapping of locale -> texts"))
        return {}
    out: dict[str, MessageSet] = {}
    for locale, texts in raw.items():
        path: tuple[str | int, ...] = ("messages", str(locale))
        if not _LOCALE.match(str(locale)):
            problems.append(Problem(format_path(path), "not a locale tag (such as en, es, pt-BR)"))
            continue
        try:
            out[str(locale)] = MessageSet.model_validate(texts)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, path))
    return out


def _shown(text: str) -> str:
    """Text as it is when short, clipped (and quoted) when long."""
    return text if len(text) <= 60 else clip(text)


# --- cross-object checks ------------------------------------------------------------------------


def _failed_duplicates(
    items: list[Any], valid: list[int], id_field: str, section: str
) -> list[Problem]:
    """Duplicates involving an item that failed its own validation (kept out of the
    document): the checks of the whole document see only the valid ones."""
    first: dict[str, int] = {}
    valid_set = set(valid)
    problems = []
    for i, item in enumerate(items):
        key = item.get(id_field) if isinstance(item, dict) else None
        if not isinstance(key, str):
            continue
        if key not in first:
            first[key] = i
        elif i not in valid_set or first[key] not in valid_set:
            problems.append(
                Problem(
                    f"{section}[{i}].{id_field}",
                    f"duplicate {clip(key)} (first at {section}[{first[key]}])",
                )
            )
    return problems


def _raw_selects(item: Any, index: int, errors: list[Any]) -> list[tuple[str, str]]:
    """(path, text) of the escalation steps' selections of a queue whose ``escalate`` failed
    validation, unless the selection itself is what failed."""
    if not isinstance(item, dict):
        return []
    bad = {tuple(err.get("loc", ())) for err in errors}
    found: list[tuple[str, str]] = []
    steps = item.get("escalate")
    if isinstance(steps, list):
        for j, step in enumerate(steps):
            if (
                isinstance(step, dict)
                and isinstance(step.get("select"), str)
                and ("escalate", j, "select") not in bad
            ):
                found.append((f"queues[{index}].escalate[{j}].select", step["select"]))
    return found


def check_document(
    doc: ConfigDocument,
    failed: dict[str, set[str]] | None = None,
    positions: dict[str, list[int]] | None = None,
    stray_selects: list[tuple[str, str]] | None = None,
) -> list[Problem]:
    """Whole-document checks over individually valid objects (ids, references, values, CEL).

    ``positions[section][i]`` is the index in the original document of the i-th object.
    Objects that failed their own validation are absent from ``doc`` or present as salvaged
    (``salvage``): a field that failed is None there and its checks are skipped.
    """
    failed = failed or {s: set() for s in SECTIONS}
    problems: list[Problem] = []
    if positions:
        problems = _Renumbering(positions)
    attributes = _unique(problems, "attributes", doc.attributes, "name")
    _unique(problems, "experts", doc.experts, "id")
    queues = _unique(problems, "queues", doc.queues, "id")
    _unique(problems, "entry_points", doc.entry_points, "dialed_number")
    presence = _unique(problems, "presence", doc.presence, "id")
    known = _Known(attributes, queues, presence, failed)
    _check_experts(problems, doc.experts, known)
    # Selections may name attributes whose declaration has its own error: declare them untyped
    # so that error is reported once, at the declaration.
    compiler = SelectionCompiler(attributes.values(), untyped=failed["attributes"])
    for i, queue in enumerate(doc.queues):
        _check_queue(problems, f"queues[{i}]", queue, known, compiler)
    problems.extend(_overflow_loops(doc.queues, queues))
    if stray_selects:
        # Paths of invalid objects are already document indexes: bypass the renumbering.
        list.extend(
            problems,
            (Problem(path, msg) for path, text in stray_selects if (msg := compiler.check(text))),
        )

    for i, entry in enumerate(doc.entry_points):
        if entry.queue is not None and entry.queue not in known.queue_ids:
            problems.append(
                Problem(
                    f"entry_points[{i}].queue",
                    _unknown("queue", {**queues, **dict.fromkeys(failed["queues"])}),
                )
            )
    return list(problems)


@dataclass(slots=True)
class _Known:
    """The document's objects by id, for references; ids of objects that failed their own
    validation count as known too (their problem is reported where they are)."""

    attributes: dict[str, Attribute]
    queues: dict[str, Queue]
    presence: dict[str, PresenceSource]
    failed: dict[str, set[str]]
    attribute_names: set[str] = field(init=False)
    queue_ids: set[str] = field(init=False)
    presence_ids: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.attribute_names = set(self.attributes) | self.failed["attributes"]
        self.queue_ids = set(self.queues) | self.failed["queues"]
        self.presence_ids = set(self.presence) | self.failed["presence"]


def _check_experts(problems: list[Problem], experts: list[Expert], known: _Known) -> None:
    """Attribute values against their declarations, IM addresses unique, presence sources."""
    checkers = {name: _value_checker(attr) for name, attr in known.attributes.items()}
    ims: dict[str, int] = {}
    for i, expert in enumerate(experts):
        for name, value in expert.attributes.items():
            checker = checkers.get(name)
            if checker is None:
                if name not in known.attribute_names:
                    problems.append(Problem(f"experts[{i}].attributes.{name}", "unknown attribute"))
                continue
            message = checker(value)
            if message:
                problems.append(Problem(f"experts[{i}].attributes.{name}", message))
            elif known.attributes[name].type == "number" and isinstance(value, int):
                expert.attributes[name] = float(value)
        if expert.im is not None:
            first = ims.setdefault(expert.im.lower(), i)
            if first != i:
                problems.append(
                    Problem(
                        f"experts[{i}].im",
                        f"already used by experts[{first}] ({_shown(expert.im)})",
                    )
                )
        if expert.presence_source is not None and expert.presence_source not in known.presence_ids:
            problems.append(
                Problem(
                    f"experts[{i}].presence_source", _unknown("presence source", known.presence)
                )
            )


def _check_queue(
    problems: list[Problem], base: str, queue: Queue, known: _Known, compiler: SelectionCompiler
) -> None:
    """The skill attribute, the overflow target and the selections of one queue."""
    if queue.skill is not None:
        attr = known.attributes.get(queue.skill)
        if attr is None:
            if queue.skill not in known.attribute_names:
                problems.append(Problem(f"{base}.skill", _unknown("attribute", known.attributes)))
        elif attr.type not in ("proficiency", "number"):
            problems.append(
                Problem(
                    f"{base}.skill", f"{clip(queue.skill)} is a {attr.type}; needs a numeric one"
                )
            )
    elif queue.order == "most_skilled":
        problems.append(Problem(f"{base}.skill", "required when order is most_skilled"))
    target = queue.on_max_wait.overflow
    if target is not None:
        if target == queue.id:
            problems.append(Problem(f"{base}.on_max_wait.overflow", "overflows to itself"))
        elif target not in known.queue_ids:
            problems.append(
                Problem(f"{base}.on_max_wait.overflow", _unknown("queue", known.queues))
            )
    message = None if queue.select is None else compiler.check(queue.select)
    if message:
        problems.append(Problem(f"{base}.select", message))
    for j, step in enumerate(queue.escalate):
        message = compiler.check(step.select)
        if message:
            problems.append(Problem(f"{base}.escalate[{j}].select", message))


class _Renumbering(list[Problem]):
    """Collects problems, mapping ``section[i]`` from valid-object index to document index."""

    def __init__(self, positions: dict[str, list[int]]) -> None:
        super().__init__()
        self._positions = positions

    def append(self, problem: Problem) -> None:
        match = _INDEXED.match(problem.path)
        if match and match.group(1) in self._positions:
            where = self._positions[match.group(1)]
            real = where[int(match.group(2))]
            problem = Problem(f"{match.group(1)}[{real}]{match.group(3)}", problem.message)
        super().append(problem)

    def extend(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            self.append(problem)


_INDEXED = re.compile(r"^([a-z_]+)\[(\d+)\](.*)$", re.S)


def _document_order(problem: Problem) -> tuple[int, int]:
    match = _INDEXED.match(problem.path)
    head = match.group(1) if match else problem.path.split(".")[0].split("[")[0]
    rank = SECTIONS.index(head) if head in SECTIONS else -1
    return rank, int(match.group(2)) if match else -1


def _unique(problems: list[Problem], section: str, items: list[Any], field: str) -> dict[str, Any]:
    seen: dict[str, int] = {}
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        key = getattr(item, field)
        if key is None:  # an object that failed its own validation, its id among the fields
            continue
        if key in seen:
            problems.append(
                Problem(
                    f"{section}[{i}].{field}",
                    f"duplicate {clip(key)} (first at {section}[{seen[key]}])",
                )
            )
            continue
        seen[key] = i
        out[key] = item
    return out


def _unknown(what: str, known: dict[str, Any]) -> str:
    names = list(known)
    hint = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"no such {what}" + (f" (known: {hint})" if names else f" (no {what}s are declared)")


def _value_checker(attr: Attribute) -> Callable[[Any], str | None]:
    """A fast per-type check of one expert's value for ``attr``: None, or the problem."""
    if attr.type == "proficiency":

        def proficiency(value: Any) -> str | None:
            if is_proficiency(value):
                return None
            if type(value) is not int:
                return (
                    f"expected a proficiency from {PROFICIENCY_MIN} to {PROFICIENCY_MAX}, "
                    f"got {describe(value)}"
                )
            return f"proficiency {value} is out of range {PROFICIENCY_MIN}..{PROFICIENCY_MAX}"

        return proficiency
    if attr.type == "boolean":
        return lambda v: (
            None if isinstance(v, bool) else f"expected true or false, got {describe(v)}"
        )
    if attr.type == "number":
        return lambda v: None if is_attribute_number(v) else f"expected a number, got {describe(v)}"
    if attr.type == "string":
        return lambda v: None if isinstance(v, str) else f"expected text, got {describe(v)}"
    allowed = set(attr.values or ())
    shown = ", ".join(attr.values or ())

    def members(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"expected a list of [{shown}], got {describe(value)}"
        for item in value:
            if not isinstance(item, str) or item not in allowed:
                return f"{clip(item)} is not one of [{shown}]"
        if len(set(value)) != len(value):
            return "has duplicates"
        return None

    return members


def _overflow_loops(items: list[Queue], queues: dict[str, Queue]) -> list[Problem]:
    """Overflow chains that come back to where they started would bounce a task forever."""
    index = {q.id: i for i, q in enumerate(items)}
    problems = []
    reported: set[str] = set()
    for start in queues.values():
        chain = [start.id]
        current = start
        while current.on_max_wait.overflow in queues and current.on_max_wait.overflow != current.id:
            nxt = current.on_max_wait.overflow
            if nxt in chain:
                loop = chain[chain.index(nxt) :]
                if not reported & set(loop):
                    reported.update(loop)
                    problems.append(
                        Problem(
                            f"queues[{index[loop[-1]]}].on_max_wait.overflow",
                            "overflow loop: " + " -> ".join([*loop, nxt]),
                        )
                    )
                break
            chain.append(nxt)
            current = queues[nxt]
    return problems


assert set(CEL_TYPES) == {"proficiency", "number", "boolean", "string", "list"}
