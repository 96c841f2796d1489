"""The configuration in the database: atomic apply, per-object edits, versions and history.

This module is the store's one entry point: whole documents (``documents``: load, plan,
apply, import), versions and history (``versions``), and, here, per-object edits. Edits are
optimistic: they validate against the version they read and write only the edited row, and
retry with backoff if another writer got there first.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, delete, func, select, update

from expertline.config.documents import (
    BODY_TEXT,
    KINDS,
    MODELS,
    RETRIES,
    SECTION_OF_KIND,
    ApplyResult,
    ReadOnly,
    apply_document,
    backoff,
    bulk_insert,
    cached,
    document_rows,
    guard_read_only,
    import_file,
    json_param,
    load_document,
    plan_document,
)
from expertline.config.export import object_body
from expertline.config.schema import SECTIONS, ConfigDocument, object_id
from expertline.config.validate import check_document
from expertline.config.versions import (
    Change,
    VersionInfo,
    changes,
    cli_actor,
    current_version,
    history,
    lock_writers,
    new_version,
    token_actor,
    version_of,
)
from expertline.db.tables import config_objects
from expertline.errors import Conflict, InvalidInput, NotFound, Problem

__all__ = [
    "KINDS",
    "MODELS",
    "SECTION_OF_KIND",
    "ApplyResult",
    "Change",
    "ReadOnly",
    "VersionInfo",
    "apply_document",
    "changes",
    "cli_actor",
    "create_object",
    "current_version",
    "delete_object",
    "document_rows",
    "edit_problems",
    "get_object",
    "history",
    "import_file",
    "list_objects",
    "load_document",
    "plan_document",
    "replace_object",
    "token_actor",
    "unknown_expert",
    "validated",
]

log = logging.getLogger(__name__)


def validated(doc: ConfigDocument) -> ConfigDocument:
    """``doc`` if the whole-document checks pass, else InvalidInput with every problem."""
    _refuse(list(check_document(doc)))
    return doc


def _refuse(problems: list[Problem]) -> None:
    """InvalidInput listing every problem, if there is any: the change is not applied."""
    if problems:
        n = len(problems)
        raise InvalidInput(
            f"the change would leave {n} problem{'s' if n != 1 else ''} in the configuration; "
            "nothing was applied",
            problems,
        )


def list_objects(engine: Engine, section: str) -> list[Any]:
    _, doc = load_document(engine)
    if section == "messages":
        return [(locale, texts) for locale, texts in doc.messages.items()]
    return list(getattr(doc, section))


def get_object(engine: Engine, section: str, oid: str) -> Any:
    _, doc = load_document(engine)
    found = _find(doc, section, oid)
    if found is None:
        raise NotFound(f"no {KINDS[section].replace('_', ' ')} {oid!r}")
    return found[1]


def unknown_expert(engine: Engine, expert_id: str) -> Problem | None:
    """Why a token or a user cannot be bound to ``expert_id``: the stored configuration has no
    such expert (one indexed read). None when it has."""
    with engine.connect() as conn:
        found = conn.execute(
            select(config_objects.c.object_id).where(
                config_objects.c.kind == KINDS["experts"],
                config_objects.c.object_id == expert_id,
            )
        ).first()
    if found is not None:
        return None
    return Problem(
        "expert",
        f"no expert {expert_id!r} in the configuration; import it first "
        "(expertline config import) or check the id",
    )


def _find(doc: ConfigDocument, section: str, oid: str) -> tuple[int, Any] | None:
    if section == "messages":
        texts = doc.messages.get(oid)
        return None if texts is None else (list(doc.messages).index(oid), texts)
    for i, obj in enumerate(getattr(doc, section)):
        if object_id(section, obj) == oid:
            return i, obj
    return None


Edit = tuple[ConfigDocument, Any, int]  # (new document, new object or None, its index)


def _edit(
    engine: Engine,
    section: str,
    oid: str,
    change: Callable[[ConfigDocument], Edit],
    actor: str,
) -> ApplyResult:
    """Read, change, validate the result, write the one object if nobody wrote meanwhile.

    Only the edited row (plus a version and a change record) is written, so an edit costs the
    same with 100 or 100,000 experts; on a race with another writer it retries with backoff.
    """
    kind = KINDS[section]
    for attempt in range(RETRIES):
        version, doc = load_document(engine)
        new_doc, obj, index = change(doc)
        _check_edit(doc, new_doc, section, obj, index)
        body = None if obj is None else _body_text(section, oid, obj)
        try:
            result = guard_read_only(
                actor,
                functools.partial(
                    _write_one, engine, kind, oid, body, actor, f"api:{section}", version
                ),
            )
        except Conflict:
            if attempt == RETRIES - 1:
                raise
            log.info("config edit raced another writer; retrying attempt=%d", attempt + 1)
            backoff(attempt)
            continue
        if not result.unchanged:
            cache = cached(engine)
            with cache.lock:
                if cache.version < result.version:
                    cache.version, cache.doc = result.version, new_doc
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def _check_edit(
    doc: ConfigDocument, new_doc: ConfigDocument, section: str, obj: Any, index: int
) -> None:
    """Refuse an edit that would leave problems in the configuration."""
    _refuse(_edit_problems(doc, new_doc, section, obj, index))


def _edit_problems(
    doc: ConfigDocument, new_doc: ConfigDocument, section: str, obj: Any, index: int
) -> list[Problem]:
    """An edit's problems. Nothing refers to experts, so an expert edit is checked on its own
    (attributes, presence source, IM address unique); other edits check the whole result."""
    if section != "experts":
        return list(check_document(new_doc))
    if obj is None:
        return []  # deleting an expert cannot leave a dangling reference
    mini = ConfigDocument.model_construct(
        attributes=doc.attributes,
        experts=[obj],
        queues=[],
        entry_points=[],
        presence=doc.presence,
        messages={},
    )
    problems = list(check_document(mini, positions={"experts": [index]}))
    if obj.im is not None:
        mine = obj.im.lower()
        for i, other in enumerate(new_doc.experts):
            if i != index and other.im is not None and other.im.lower() == mine:
                problems.append(
                    Problem(f"experts[{index}].im", f"already used by experts[{i}] ({other.im})")
                )
                break
    return problems


def _body_text(section: str, oid: str, obj: Any) -> str:
    if section == "messages":
        return json.dumps({"locale": oid, **object_body(obj)}, ensure_ascii=False)
    return str(obj.model_dump_json(exclude_defaults=True))


def _write_one(
    engine: Engine,
    kind: str,
    oid: str,
    body: str | None,
    actor: str,
    source: str,
    expect_version: int,
) -> ApplyResult:
    """Add, change (body given) or remove (None) one object as a new version."""
    key = (config_objects.c.kind == kind) & (config_objects.c.object_id == oid)
    with engine.begin() as conn:
        lock_writers(conn)
        version = version_of(conn)
        if version != expect_version:
            raise Conflict(
                f"the configuration changed meanwhile (version {version}, expected "
                f"{expect_version}); read it again and retry"
            )
        row = conn.execute(
            select(config_objects.c.position, BODY_TEXT.label("body")).where(key)
        ).first()
        if row is not None and row.body == body:
            return ApplyResult(version)
        op = "remove" if body is None else ("add" if row is None else "change")
        word = {"add": "added", "change": "changed", "remove": "removed"}[op]
        summary = f"{word} {kind.replace('_', ' ')} {oid}"
        new = new_version(conn, version, actor, source, summary)
        if op == "remove":
            conn.execute(delete(config_objects).where(key))
        elif op == "add":
            last = conn.execute(
                select(func.max(config_objects.c.position)).where(config_objects.c.kind == kind)
            ).scalar()
            position = -1 if last is None else int(last)
            bulk_insert(
                conn,
                "config_objects",
                ("kind", "object_id", "position", "body", "version"),
                ("body",),
                [(kind, oid, position + 1, body, new)],
            )
        else:
            conn.execute(
                update(config_objects).where(key).values(body=json_param(conn, "b"), version=new),
                {"b": body},
            )
        bulk_insert(
            conn,
            "config_changes",
            ("version", "kind", "object_id", "op", "before", "after"),
            ("before", "after"),
            [(new, kind, oid, op, None if row is None else row.body, body)],
        )
    log.info(
        "config edit applied version=%d actor=%s source=%s op=%s kind=%s id=%s",
        new,
        actor,
        source,
        op,
        kind,
        oid,
    )
    return ApplyResult(new, int(op == "add"), int(op == "change"), int(op == "remove"))


def _replaced(doc: ConfigDocument, section: str, items: Any) -> ConfigDocument:
    data = {s: getattr(doc, s) for s in SECTIONS}
    data[section] = items
    return ConfigDocument.model_construct(**data)


def _noun(section: str) -> str:
    return KINDS[section].replace("_", " ")


def create_object(
    engine: Engine, section: str, obj: Any, actor: str, locale: str | None = None
) -> ApplyResult:
    """Add one object (Conflict if its id exists; InvalidInput if the result is invalid)."""
    oid = locale if section == "messages" else object_id(section, obj)
    assert oid is not None
    return _edit(engine, section, oid, _creation(section, oid, obj), actor)


def _creation(section: str, oid: str, obj: Any) -> Callable[[ConfigDocument], Edit]:
    def change(doc: ConfigDocument) -> Edit:
        if _find(doc, section, oid) is not None:
            raise Conflict(f"{_noun(section)} {oid!r} already exists")
        if section == "messages":
            return _replaced(doc, section, {**doc.messages, oid: obj}), obj, len(doc.messages)
        items = getattr(doc, section)
        return _replaced(doc, section, [*items, obj]), obj, len(items)

    return change


def replace_object(engine: Engine, section: str, oid: str, obj: Any, actor: str) -> ApplyResult:
    """Replace one object in place (NotFound if absent). The body's id must match ``oid``."""
    if section != "messages" and object_id(section, obj) != oid:
        field_name = {"attributes": "name", "entry_points": "dialed_number"}.get(section, "id")
        raise InvalidInput(
            "the id in the body differs from the one in the path",
            [Problem(field_name, f"must be {oid!r} (renaming is delete + create)")],
        )
    return _edit(engine, section, oid, _replacement(section, oid, obj), actor)


def _replacement(section: str, oid: str, obj: Any) -> Callable[[ConfigDocument], Edit]:
    def change(doc: ConfigDocument) -> Edit:
        found = _find(doc, section, oid)
        if found is None:
            raise NotFound(f"no {_noun(section)} {oid!r}")
        if section == "messages":
            return _replaced(doc, section, {**doc.messages, oid: obj}), obj, found[0]
        items = list(getattr(doc, section))
        items[found[0]] = obj
        return _replaced(doc, section, items), obj, found[0]

    return change


def edit_problems(
    engine: Engine,
    section: str,
    obj: Any,
    oid: str | None = None,
    failed_fields: frozenset[str] = frozenset(),
) -> list[Problem]:
    """What adding ``obj`` (or, with ``oid``, replacing that object by it) would leave wrong in
    the configuration, without writing: a body refused for its own problems is told these
    too, in the same answer. ``obj`` may be salvaged (``problems.salvage``); the checks of its
    ``failed_fields`` are not repeated. [] when the edit cannot be placed (no id, taken id).
    """
    key = object_id(section, obj) if oid is None else oid
    if key is None:
        return []
    _, doc = load_document(engine)
    change = _creation(section, key, obj) if oid is None else _replacement(section, key, obj)
    try:
        new_doc, new_obj, index = change(doc)
    except (Conflict, NotFound):
        return []
    own = {f"{section}[{index}].{name}" for name in failed_fields}
    return [p for p in _edit_problems(doc, new_doc, section, new_obj, index) if p.path not in own]


def delete_object(engine: Engine, section: str, oid: str, actor: str) -> ApplyResult:
    """Remove one object; InvalidInput naming each reference that would be left dangling."""

    def change(doc: ConfigDocument) -> Edit:
        found = _find(doc, section, oid)
        if found is None:
            raise NotFound(f"no {_noun(section)} {oid!r}")
        if section == "messages":
            kept = {k: v for k, v in doc.messages.items() if k != oid}
            return _replaced(doc, section, kept), None, found[0]
        items = list(getattr(doc, section))
        del items[found[0]]
        return _replaced(doc, section, items), None, found[0]

    return _edit(engine, section, oid, change, actor)
