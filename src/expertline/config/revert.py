"""Going back in configuration history: what changed between two versions, and reverts.

Both come from the change records every version keeps (``config_changes``: each object's body
before and after). A revert is an ordinary apply: validated as a whole, written as a new
version naming its actor, so reverting a revert is possible too.

- ``net_changes(a, b)``: each object that differs between versions ``a`` and ``b``, with its
  body at ``a`` and at ``b``.
- ``undo_version(n)``: apply the inverse of version ``n``'s changes to the current
  configuration. Refused (Conflict) if one of those objects changed again since.
- ``restore_version(n)``: make the configuration what it was at version ``n``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from expertline.config import store
from expertline.config.schema import SECTIONS, ConfigDocument, MessageSet
from expertline.db.tables import config_changes, config_versions
from expertline.errors import Conflict, InvalidInput, NotFound

Key = tuple[str, str]  # (kind, object id)


@dataclass(frozen=True)
class NetChange:
    kind: str
    object_id: str
    before: dict[str, Any] | None  # None: absent at the earlier version
    after: dict[str, Any] | None  # None: absent at the later version

    @property
    def op(self) -> str:
        if self.before is None:
            return "add"
        return "remove" if self.after is None else "change"


def _body(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        loaded: dict[str, Any] = json.loads(value)
        return loaded
    return dict(value)


def _require_version(engine: Engine, version: int) -> None:
    with engine.connect() as conn:
        found = conn.execute(
            select(config_versions.c.version).where(config_versions.c.version == version)
        ).first()
    if found is None and version != 0:
        raise NotFound(f"no configuration version {version}")


def net_changes(engine: Engine, since: int, until: int, limit: int = 100_000) -> list[NetChange]:
    """Objects that differ between version ``since`` and version ``until`` (either order)."""
    low, high = sorted((since, until))
    for v in (low, high):
        _require_version(engine, v)
    first: dict[Key, Any] = {}
    last: dict[Key, Any] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                config_changes.c.kind,
                config_changes.c.object_id,
                config_changes.c.before,
                config_changes.c.after,
            )
            .where(config_changes.c.version > low, config_changes.c.version <= high)
            .order_by(config_changes.c.version, config_changes.c.id)
        )
        for kind, oid, before, after in rows:
            key = (kind, oid)
            first.setdefault(key, before)
            last[key] = after
    out = []
    for key, before in first.items():
        b, a = _body(before), _body(last[key])
        if b == a:
            continue
        if since > until:
            b, a = a, b
        out.append(NetChange(key[0], key[1], b, a))
        if len(out) >= limit:
            break
    return out


def undo_version(engine: Engine, version: int, actor: str) -> store.ApplyResult:
    """Apply the inverse of one version's changes to the current configuration."""
    current, doc = store.load_document(engine)
    rows = _current_bodies(doc)
    for change in store.changes(engine, version, limit=10_000_000):
        key = (change.kind, change.object_id)
        after, before = _body(change.after), _body(change.before)
        if rows.get(key) != after:
            noun = change.kind.replace("_", " ")
            raise Conflict(
                f"{noun} {change.object_id} changed again after version {version}; "
                "restore a whole version instead"
            )
        if before is None:
            rows.pop(key, None)
        else:
            rows[key] = before
    new_doc = _document(rows)
    return store.apply_document(
        engine, store.validated(new_doc), actor, f"revert:{version}", expect_version=current
    )


def restore_version(engine: Engine, version: int, actor: str) -> store.ApplyResult:
    """Make the configuration what it was at ``version`` (a new version)."""
    current, doc = store.load_document(engine)
    if version > current or version < 0:
        raise NotFound(f"no configuration version {version}")
    rows = _current_bodies(doc)
    for change in net_changes(engine, current, version):
        key = (change.kind, change.object_id)
        if change.after is None:
            rows.pop(key, None)
        else:
            rows[key] = change.after
    new_doc = _document(rows)
    return store.apply_document(
        engine, store.validated(new_doc), actor, f"restore:{version}", expect_version=current
    )


def _current_bodies(doc: ConfigDocument) -> dict[Key, dict[str, Any]]:
    """(kind, id) -> canonical body, in document order (the bodies the store keeps)."""
    return {key: json.loads(body) for key, (_, body) in store.document_rows(doc).items()}


def _document(rows: dict[Key, dict[str, Any]]) -> ConfigDocument:
    sections: dict[str, Any] = {s: [] for s in SECTIONS}
    sections["messages"] = {}
    for (kind, _), body in rows.items():
        section = store.SECTION_OF_KIND.get(kind)
        if section is None:
            continue
        if section == "messages":
            data = dict(body)
            locale = data.pop("locale")
            sections["messages"][locale] = MessageSet.model_validate(data)
        else:
            sections[section].append(store.MODELS[section].model_validate(body))
    try:
        return ConfigDocument.model_construct(**sections)
    except ValueError as exc:  # pragma: no cover - bodies come from validated versions
        raise InvalidInput(f"the reverted configuration is not valid: {exc}") from exc
