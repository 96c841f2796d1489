"""The configuration in the database: atomic apply, per-object edits, versions and history.

Each object is one ``config_objects`` row holding its canonical body (see ``export``). Applying
a document diffs it against those rows inside one transaction, writes only what changed,
adds one ``config_versions`` row and one ``config_changes`` row per added, changed or removed
object. Writers serialize on a lock (PostgreSQL advisory lock; SQLite's write lock taken at
the start of the transaction), and per-object edits are optimistic: they validate against the
version they read and retry, with backoff, if another writer got there first.

Validated documents are cached per engine and version: readers (the routing runtime, the
API) share one immutable ``ConfigDocument`` until the version changes. Do not mutate it.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError

from expertline.config.export import object_body
from expertline.config.schema import (
    SECTIONS,
    Attribute,
    ConfigDocument,
    EntryPoint,
    Expert,
    MessageSet,
    PresenceSource,
    Queue,
    object_id,
)
from expertline.config.validate import check_document
from expertline.db.engine import as_utc
from expertline.db.tables import config_changes, config_objects, config_versions
from expertline.errors import Conflict, ExpertlineError, InvalidInput, NotFound, Problem

log = logging.getLogger(__name__)

#: Section name in the document -> ``kind`` stored in the database.
KINDS: dict[str, str] = {
    "attributes": "attribute",
    "experts": "expert",
    "queues": "queue",
    "entry_points": "entry_point",
    "presence": "presence_source",
    "messages": "message_set",
}
SECTION_OF_KIND = {kind: section for section, kind in KINDS.items()}
MODELS: dict[str, type[BaseModel]] = {
    "attributes": Attribute,
    "experts": Expert,
    "queues": Queue,
    "entry_points": EntryPoint,
    "presence": PresenceSource,
    "messages": MessageSet,
}
_PG_LOCK_KEY = 0x6578_6C63  # "exlc": configuration writers
_BATCH = 5000
_RETRIES = 5


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did. ``version`` is the new version, or the unchanged current one."""

    version: int
    added: int = 0
    changed: int = 0
    removed: int = 0

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.changed or self.removed)


@dataclass(frozen=True)
class VersionInfo:
    version: int
    applied_at: datetime
    actor: str
    source: str
    summary: str
    added: int = 0
    changed: int = 0
    removed: int = 0


@dataclass(frozen=True)
class Change:
    version: int
    kind: str
    object_id: str
    op: str  # add | change | remove
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass
class _Cache:
    version: int = -1
    doc: ConfigDocument | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_caches: weakref.WeakKeyDictionary[Engine, _Cache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def cli_actor() -> str:
    """``cli:<os user>``: who applied a change from the command line."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = str(os.getuid())
    return f"cli:{user}"


def token_actor(name: str) -> str:
    return f"token:{name}"


# --- reading ------------------------------------------------------------------------------------


def current_version(engine: Engine) -> int:
    """The applied configuration version; 0 before the first apply."""
    with engine.connect() as conn:
        return _version(conn)


def _version(conn: Connection) -> int:
    return int(
        conn.execute(select(func.coalesce(func.max(config_versions.c.version), 0))).scalar_one()
    )


def load_document(engine: Engine) -> tuple[int, ConfigDocument]:
    """(version, document) as applied. Shared and cached per version: treat it as read-only."""
    cache = _cache(engine)
    version = current_version(engine)
    if cache.doc is not None and cache.version == version:
        return version, cache.doc
    with cache.lock:
        if cache.doc is not None and cache.version == version:
            return version, cache.doc
        for attempt in range(_RETRIES):
            with engine.connect() as conn:
                before = _version(conn)
                rows = conn.execute(
                    select(config_objects.c.kind, _BODY_TEXT).order_by(
                        config_objects.c.kind, config_objects.c.position
                    )
                ).all()
                after = _version(conn)
            if before == after:
                break
            _backoff(attempt)  # a writer committed between our reads: read again
        doc = _document_from_rows(rows)
        cache.version, cache.doc = after, doc
        log.info("config loaded version=%d objects=%d", after, len(rows))
        return after, doc


def _cache(engine: Engine) -> _Cache:
    with _caches_lock:
        cache = _caches.get(engine)
        if cache is None:
            cache = _caches[engine] = _Cache()
        return cache


def _document_from_rows(rows: Sequence[Any]) -> ConfigDocument:
    sections: dict[str, Any] = {s: [] for s in SECTIONS}
    sections["messages"] = {}
    for kind, body in rows:
        section = SECTION_OF_KIND.get(kind)
        if section is None:
            continue
        if section == "messages":
            data = json.loads(body)
            locale = data.pop("locale")
            sections["messages"][locale] = MessageSet.model_validate(data)
        else:
            sections[section].append(MODELS[section].model_validate_json(body))
    return ConfigDocument.model_construct(**sections)


def history(engine: Engine, limit: int = 50, before: int | None = None) -> list[VersionInfo]:
    """Applied versions, newest first; ``before`` pages back (versions lower than it)."""
    limit = max(1, min(limit, 1000))
    query = select(config_versions).order_by(config_versions.c.version.desc()).limit(limit)
    if before is not None:
        query = query.where(config_versions.c.version < before)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        if not rows:
            return []
        counts: dict[tuple[int, str], int] = {
            (v, op): n
            for v, op, n in conn.execute(
                select(config_changes.c.version, config_changes.c.op, func.count())
                .where(config_changes.c.version.in_([r.version for r in rows]))
                .group_by(config_changes.c.version, config_changes.c.op)
            )
        }
    return [
        VersionInfo(
            version=r.version,
            applied_at=as_utc(r.applied_at),
            actor=r.actor,
            source=r.source,
            summary=r.summary,
            added=counts.get((r.version, "add"), 0),
            changed=counts.get((r.version, "change"), 0),
            removed=counts.get((r.version, "remove"), 0),
        )
        for r in rows
    ]


def changes(engine: Engine, version: int, limit: int = 1000) -> list[Change]:
    """What one version changed, object by object (with bodies before and after)."""
    with engine.connect() as conn:
        exists = conn.execute(
            select(config_versions.c.version).where(config_versions.c.version == version)
        ).first()
        if exists is None:
            raise NotFound(f"no configuration version {version}")
        rows = conn.execute(
            select(config_changes)
            .where(config_changes.c.version == version)
            .order_by(config_changes.c.id)
            .limit(limit)
        ).all()
    return [Change(r.version, r.kind, r.object_id, r.op, r.before, r.after) for r in rows]


# --- writing ------------------------------------------------------------------------------------


def document_rows(doc: ConfigDocument) -> dict[tuple[str, str], tuple[int, str]]:
    """(kind, object id) -> (position in its section, canonical body as JSON text).

    Bodies are compared and stored as text: serializing in pydantic's core and comparing
    strings keeps a 100,000-expert apply to a few seconds.
    """
    rows: dict[tuple[str, str], tuple[int, str]] = {}
    for section in SECTIONS:
        kind = KINDS[section]
        if section == "messages":
            for i, (locale, texts) in enumerate(doc.messages.items()):
                body = json.dumps({"locale": locale, **object_body(texts)}, ensure_ascii=False)
                rows[(kind, locale)] = (i, body)
            continue
        for i, obj in enumerate(getattr(doc, section)):
            rows[(kind, object_id(section, obj))] = (i, obj.model_dump_json(exclude_defaults=True))
    return rows


def _json_param(conn: Connection, name: str) -> Any:
    """A bind parameter carrying ready-made JSON text into a JSON column."""
    param = bindparam(name, type_=Text)
    return cast(param, JSON) if conn.dialect.name == "postgresql" else param


_BODY_TEXT = cast(config_objects.c.body, Text)


def apply_document(
    engine: Engine,
    doc: ConfigDocument,
    actor: str,
    source: str = "import",
    expect_version: int | None = None,
) -> ApplyResult:
    """Make ``doc`` the configuration, atomically. ``doc`` must be valid (``validate_document``).

    Writes nothing and keeps the version when nothing differs. With ``expect_version``, raises
    Conflict if another writer applied a version in between (optimistic edits).
    """
    return _guard_read_only(actor, lambda: _apply(engine, doc, actor, source, expect_version))


def _guard_read_only(actor: str, write: Callable[[], ApplyResult]) -> ApplyResult:
    try:
        return write()
    except DBAPIError as exc:
        if "read-only" in str(exc.orig) or "read only" in str(exc.orig):
            log.warning("config write refused: the database is read-only actor=%s", actor)
            raise ReadOnly() from exc
        raise


class ReadOnly(ExpertlineError):
    """This node's database is a read-only standby: configuration is written on the primary."""

    def __init__(self) -> None:
        super().__init__(
            "this node's database is read-only (a standby); change the configuration on the "
            "node whose database is the primary",
            [],
            "read_only",
            503,
        )


def _apply(
    engine: Engine,
    doc: ConfigDocument,
    actor: str,
    source: str,
    expect_version: int | None,
) -> ApplyResult:
    started = time.perf_counter()
    wanted = document_rows(doc)
    with engine.begin() as conn:
        _lock(conn)
        version = _version(conn)
        if expect_version is not None and version != expect_version:
            raise Conflict(
                f"the configuration changed meanwhile (version {version}, expected "
                f"{expect_version}); read it again and retry"
            )
        current = _current_rows(conn)
        added, changed, removed, moved = _diff(current, wanted)
        if not (added or removed or changed):
            if moved:
                _update_positions(conn, moved, wanted)
            log.info("config apply found nothing to change version=%d actor=%s", version, actor)
            return ApplyResult(version)
        summary = _summary(added, changed, removed)
        new = _new_version(conn, version, actor, source, summary)
        for chunk in _chunks(removed):
            conn.execute(
                delete(config_objects).where(
                    config_objects.c.kind == bindparam("k"),
                    config_objects.c.object_id == bindparam("o"),
                ),
                [{"k": k, "o": o} for k, o in chunk],
            )
        for chunk in _chunks(changed):
            conn.execute(
                update(config_objects)
                .where(
                    config_objects.c.kind == bindparam("k"),
                    config_objects.c.object_id == bindparam("o"),
                )
                .values(
                    position=bindparam("p"), body=_json_param(conn, "b"), version=bindparam("v")
                ),
                [
                    {"k": k, "o": o, "p": wanted[(k, o)][0], "b": wanted[(k, o)][1], "v": new}
                    for k, o in chunk
                ],
            )
        if moved:
            _update_positions(conn, moved, wanted)
        _bulk_insert(
            conn,
            "config_objects",
            ("kind", "object_id", "position", "body", "version"),
            ("body",),
            [(k, o, wanted[(k, o)][0], wanted[(k, o)][1], new) for k, o in added],
        )
        records = (
            [(new, k, o, "add", None, wanted[(k, o)][1]) for k, o in added]
            + [(new, k, o, "change", current[(k, o)][1], wanted[(k, o)][1]) for k, o in changed]
            + [(new, k, o, "remove", current[(k, o)][1], None) for k, o in removed]
        )
        _bulk_insert(
            conn,
            "config_changes",
            ("version", "kind", "object_id", "op", "before", "after"),
            ("before", "after"),
            records,
        )
    cache = _cache(engine)
    with cache.lock:
        cache.version, cache.doc = new, doc
    log.info(
        "config applied version=%d actor=%s source=%s added=%d changed=%d removed=%d ms=%.0f",
        new,
        actor,
        source,
        len(added),
        len(changed),
        len(removed),
        (time.perf_counter() - started) * 1000,
    )
    return ApplyResult(new, len(added), len(changed), len(removed))


Key = tuple[str, str]


def _current_rows(conn: Connection) -> dict[Key, tuple[int, str]]:
    return {
        (r.kind, r.object_id): (r.position, r.body)
        for r in conn.execute(
            select(
                config_objects.c.kind,
                config_objects.c.object_id,
                config_objects.c.position,
                _BODY_TEXT.label("body"),
            )
        )
    }


def _diff(
    current: dict[Key, tuple[int, str]], wanted: dict[Key, tuple[int, str]]
) -> tuple[list[Key], list[Key], list[Key], list[Key]]:
    """(added, changed, removed, moved): moved objects only changed position."""
    added = [k for k in wanted if k not in current]
    removed = [k for k in current if k not in wanted]
    changed = []
    moved = []
    for key, (position, body) in wanted.items():
        have = current.get(key)
        if have is None:
            continue
        if have[1] != body:
            changed.append(key)
        elif have[0] != position:
            moved.append(key)
    return added, changed, removed, moved


def plan_document(engine: Engine, doc: ConfigDocument) -> ApplyResult:
    """What ``apply_document`` would do, without writing (``version`` is the current one)."""
    wanted = document_rows(doc)
    with engine.connect() as conn:
        version = _version(conn)
        added, changed, removed, _ = _diff(_current_rows(conn), wanted)
    return ApplyResult(version, len(added), len(changed), len(removed))


def _bulk_insert(
    conn: Connection,
    table: str,
    columns: tuple[str, ...],
    json_columns: tuple[str, ...],
    rows: list[tuple[Any, ...]],
) -> None:
    """Driver-level executemany: a 100,000-row import spends its time in the database, not
    in per-row statement processing. JSON values are ready-made text."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        marks = ", ".join("%s::json" if c in json_columns else "%s" for c in columns)
    else:
        marks = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
    for chunk in _chunks(rows):
        conn.exec_driver_sql(sql, chunk)


def _update_positions(
    conn: Connection, keys: list[tuple[str, str]], wanted: dict[tuple[str, str], tuple[int, Any]]
) -> None:
    for chunk in _chunks(keys):
        conn.execute(
            update(config_objects)
            .where(
                config_objects.c.kind == bindparam("k"),
                config_objects.c.object_id == bindparam("o"),
            )
            .values(position=bindparam("p")),
            [{"k": k, "o": o, "p": wanted[(k, o)][0]} for k, o in chunk],
        )


def _lock(conn: Connection) -> None:
    """Serialize configuration writers for the rest of this transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    else:
        # A write statement first takes SQLite's write lock (waiting up to busy_timeout)
        # before anything is read, so the read below cannot go stale.
        conn.execute(
            update(config_versions)
            .where(config_versions.c.version == -1)
            .values(version=config_versions.c.version)
        )


def _new_version(conn: Connection, version: int, actor: str, source: str, summary: str) -> int:
    """Record the version after ``version`` (who, from where, what) and return it."""
    new = version + 1
    conn.execute(
        insert(config_versions).values(
            version=new,
            applied_at=datetime.now(UTC),
            actor=actor[:255],
            source=source[:64],
            summary=summary,
        )
    )
    return new


def _summary(added: list[Key], changed: list[Key], removed: list[Key]) -> str:
    """``added expert alice; changed queue billing`` or, for bulk, counts per kind."""
    parts = []
    for word, keys in (("added", added), ("changed", changed), ("removed", removed)):
        if not keys:
            continue
        if len(keys) <= 3:
            parts.append(f"{word} " + ", ".join(f"{k.replace('_', ' ')} {o}" for k, o in keys))
        else:
            counts: dict[str, int] = {}
            for kind, _ in keys:
                counts[kind] = counts.get(kind, 0) + 1
            parts.append(
                f"{word} " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
            )
    return "; ".join(parts)


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + _BATCH] for i in range(0, len(items), _BATCH)]


def _backoff(attempt: int) -> None:
    time.sleep(min(0.5, 0.01 * (2**attempt)))


# --- whole documents and single objects ---------------------------------------------------------


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
    for attempt in range(_RETRIES):
        version, doc = load_document(engine)
        new_doc, obj, index = change(doc)
        _check_edit(doc, new_doc, section, obj, index)
        body = None if obj is None else _body_text(section, oid, obj)
        try:
            result = _guard_read_only(
                actor,
                functools.partial(
                    _write_one, engine, kind, oid, body, actor, f"api:{section}", version
                ),
            )
        except Conflict:
            if attempt == _RETRIES - 1:
                raise
            log.info("config edit raced another writer; retrying attempt=%d", attempt + 1)
            _backoff(attempt)
            continue
        if not result.unchanged:
            cache = _cache(engine)
            with cache.lock:
                if cache.version < result.version:
                    cache.version, cache.doc = result.version, new_doc
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def _check_edit(
    doc: ConfigDocument, new_doc: ConfigDocument, section: str, obj: Any, index: int
) -> None:
    """Validate an edit. Nothing refers to experts, so an expert edit is checked on its own
    (attributes, presence source, IM address unique); other edits check the whole result."""
    if section != "experts":
        validated(new_doc)
        return
    if obj is None:
        return  # deleting an expert cannot leave a dangling reference
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
    _refuse(problems)


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
        _lock(conn)
        version = _version(conn)
        if version != expect_version:
            raise Conflict(
                f"the configuration changed meanwhile (version {version}, expected "
                f"{expect_version}); read it again and retry"
            )
        row = conn.execute(
            select(config_objects.c.position, _BODY_TEXT.label("body")).where(key)
        ).first()
        if row is not None and row.body == body:
            return ApplyResult(version)
        op = "remove" if body is None else ("add" if row is None else "change")
        word = {"add": "added", "change": "changed", "remove": "removed"}[op]
        summary = f"{word} {kind.replace('_', ' ')} {oid}"
        new = _new_version(conn, version, actor, source, summary)
        if op == "remove":
            conn.execute(delete(config_objects).where(key))
        elif op == "add":
            last = conn.execute(
                select(func.max(config_objects.c.position)).where(config_objects.c.kind == kind)
            ).scalar()
            position = -1 if last is None else int(last)
            _bulk_insert(
                conn,
                "config_objects",
                ("kind", "object_id", "position", "body", "version"),
                ("body",),
                [(kind, oid, position + 1, body, new)],
            )
        else:
            conn.execute(
                update(config_objects).where(key).values(body=_json_param(conn, "b"), version=new),
                {"b": body},
            )
        _bulk_insert(
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

    def change(doc: ConfigDocument) -> Edit:
        if _find(doc, section, oid) is not None:
            raise Conflict(f"{_noun(section)} {oid!r} already exists")
        if section == "messages":
            return _replaced(doc, section, {**doc.messages, oid: obj}), obj, len(doc.messages)
        items = getattr(doc, section)
        return _replaced(doc, section, [*items, obj]), obj, len(items)

    return _edit(engine, section, oid, change, actor)


def replace_object(engine: Engine, section: str, oid: str, obj: Any, actor: str) -> ApplyResult:
    """Replace one object in place (NotFound if absent). The body's id must match ``oid``."""
    if section != "messages" and object_id(section, obj) != oid:
        field_name = {"attributes": "name", "entry_points": "dialed_number"}.get(section, "id")
        raise InvalidInput(
            "the id in the body differs from the one in the path",
            [Problem(field_name, f"must be {oid!r} (renaming is delete + create)")],
        )

    def change(doc: ConfigDocument) -> Edit:
        found = _find(doc, section, oid)
        if found is None:
            raise NotFound(f"no {_noun(section)} {oid!r}")
        if section == "messages":
            return _replaced(doc, section, {**doc.messages, oid: obj}), obj, found[0]
        items = list(getattr(doc, section))
        items[found[0]] = obj
        return _replaced(doc, section, items), obj, found[0]

    return _edit(engine, section, oid, change, actor)


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


def import_file(engine: Engine, path: str | os.PathLike[str], actor: str) -> ApplyResult:
    """Validate a YAML file and apply it (InvalidInput listing every problem; nothing applied)."""
    from pathlib import Path

    from expertline.config.validate import load_yaml

    doc = load_yaml(Path(path).read_text(encoding="utf-8"))
    return apply_document(engine, doc, actor, source="import")
