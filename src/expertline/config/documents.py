"""Whole configuration documents in the database: read (cached per version), plan, apply.

Each object is one ``config_objects`` row holding its canonical body (see ``export``). Applying
a document diffs it against those rows inside one transaction, writes only what changed, and
records the new version and its changes (``versions``).

Validated documents are cached per engine and version: readers (the routing runtime, the
API) share one immutable ``ConfigDocument`` until the version changes. Do not mutate it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from sqlalchemy import JSON, Connection, Engine, Text, bindparam, cast, delete, select, update
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
from expertline.config.versions import (
    Key,
    current_version,
    describe_changes,
    lock_writers,
    new_version,
    version_of,
)
from expertline.db.tables import config_objects
from expertline.errors import Conflict, ExpertlineError

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


_BATCH = 5000


RETRIES = 5


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


@dataclass
class _Cache:
    version: int = -1
    doc: ConfigDocument | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_caches: weakref.WeakKeyDictionary[Engine, _Cache] = weakref.WeakKeyDictionary()


_caches_lock = threading.Lock()


def load_document(engine: Engine) -> tuple[int, ConfigDocument]:
    """(version, document) as applied. Shared and cached per version: treat it as read-only."""
    cache = cached(engine)
    version = current_version(engine)
    if cache.doc is not None and cache.version == version:
        return version, cache.doc
    with cache.lock:
        if cache.doc is not None and cache.version == version:
            return version, cache.doc
        for attempt in range(RETRIES):
            with engine.connect() as conn:
                before = version_of(conn)
                rows = conn.execute(
                    select(config_objects.c.kind, BODY_TEXT).order_by(
                        config_objects.c.kind, config_objects.c.position
                    )
                ).all()
                after = version_of(conn)
            if before == after:
                break
            backoff(attempt)  # a writer committed between our reads: read again
        doc = _document_from_rows(rows)
        cache.version, cache.doc = after, doc
        log.info("config loaded version=%d objects=%d", after, len(rows))
        return after, doc


def cached(engine: Engine) -> _Cache:
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


def json_param(conn: Connection, name: str) -> Any:
    """A bind parameter carrying ready-made JSON text into a JSON column."""
    param = bindparam(name, type_=Text)
    return cast(param, JSON) if conn.dialect.name == "postgresql" else param


BODY_TEXT = cast(config_objects.c.body, Text)


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
    return guard_read_only(actor, lambda: _apply(engine, doc, actor, source, expect_version))


def guard_read_only(actor: str, write: Callable[[], ApplyResult]) -> ApplyResult:
    try:
        return write()
    except DBAPIError as exc:
        if "read-only" in str(exc.orig) or "read only" in str(exc.orig):
            log.warning("config write refused: the database is read-only actor=%s", actor)
            raise ReadOnly() from exc
        raise


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
        lock_writers(conn)
        version = version_of(conn)
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
        summary = describe_changes(added, changed, removed)
        new = new_version(conn, version, actor, source, summary)
        for chunk in chunks(removed):
            conn.execute(
                delete(config_objects).where(
                    config_objects.c.kind == bindparam("k"),
                    config_objects.c.object_id == bindparam("o"),
                ),
                [{"k": k, "o": o} for k, o in chunk],
            )
        for chunk in chunks(changed):
            conn.execute(
                update(config_objects)
                .where(
                    config_objects.c.kind == bindparam("k"),
                    config_objects.c.object_id == bindparam("o"),
                )
                .values(
                    position=bindparam("p"), body=json_param(conn, "b"), version=bindparam("v")
                ),
                [
                    {"k": k, "o": o, "p": wanted[(k, o)][0], "b": wanted[(k, o)][1], "v": new}
                    for k, o in chunk
                ],
            )
        if moved:
            _update_positions(conn, moved, wanted)
        bulk_insert(
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
        bulk_insert(
            conn,
            "config_changes",
            ("version", "kind", "object_id", "op", "before", "after"),
            ("before", "after"),
            records,
        )
    cache = cached(engine)
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


def _current_rows(conn: Connection) -> dict[Key, tuple[int, str]]:
    return {
        (r.kind, r.object_id): (r.position, r.body)
        for r in conn.execute(
            select(
                config_objects.c.kind,
                config_objects.c.object_id,
                config_objects.c.position,
                BODY_TEXT.label("body"),
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
        version = version_of(conn)
        added, changed, removed, _ = _diff(_current_rows(conn), wanted)
    return ApplyResult(version, len(added), len(changed), len(removed))


def bulk_insert(
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
    for chunk in chunks(rows):
        conn.exec_driver_sql(sql, chunk)


def _update_positions(
    conn: Connection, keys: list[tuple[str, str]], wanted: dict[tuple[str, str], tuple[int, Any]]
) -> None:
    for chunk in chunks(keys):
        conn.execute(
            update(config_objects)
            .where(
                config_objects.c.kind == bindparam("k"),
                config_objects.c.object_id == bindparam("o"),
            )
            .values(position=bindparam("p")),
            [{"k": k, "o": o, "p": wanted[(k, o)][0]} for k, o in chunk],
        )


def chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + _BATCH] for i in range(0, len(items), _BATCH)]


def backoff(attempt: int) -> None:
    time.sleep(min(0.5, 0.01 * (2**attempt)))


def import_file(engine: Engine, path: str | os.PathLike[str], actor: str) -> ApplyResult:
    """Validate a YAML file and apply it (InvalidInput listing every problem; nothing applied)."""
    from pathlib import Path

    from expertline.config.validate import load_yaml

    doc = load_yaml(Path(path).read_text(encoding="utf-8"))
    return apply_document(engine, doc, actor, source="import")
