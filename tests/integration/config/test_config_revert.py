"""Differences between configuration versions, undo of one version, restore of a version."""

from __future__ import annotations

import pytest

from expertline.config import revert, store
from expertline.config.schema import Queue
from expertline.config.validate import load_yaml
from expertline.errors import Conflict

BASE = """
attributes:
  - {name: billing, type: proficiency}
experts:
  - {id: alice, name: Alice, phone: "sip:1@x", attributes: {billing: 80}}
queues:
  - {id: billing, name: Billing, select: "billing >= 50"}
"""


def test_undo_and_restore_are_new_versions(engine) -> None:
    store.apply_document(engine, load_yaml(BASE), "test")
    vip = Queue(id="vip", name="VIP", select="billing >= 90")
    store.create_object(engine, "queues", vip, "web:ann")  # version 2
    renamed = Queue(id="billing", name="Billing desk", select="billing >= 50")
    store.replace_object(engine, "queues", "billing", renamed, "web:ann")  # version 3

    changes = revert.net_changes(engine, 1, 3)
    assert {(c.object_id, c.op) for c in changes} == {("vip", "add"), ("billing", "change")}
    backwards = revert.net_changes(engine, 3, 1)
    assert {(c.object_id, c.op) for c in backwards} == {("vip", "remove"), ("billing", "change")}

    result = revert.undo_version(engine, 2, "web:ann")  # the vip queue goes, the rename stays
    assert result.version == 4 and result.removed == 1
    _, doc = store.load_document(engine)
    assert [q.id for q in doc.queues] == ["billing"] and doc.queues[0].name == "Billing desk"
    assert store.history(engine, limit=1)[0].source == "revert:2"

    result = revert.restore_version(engine, 2, "web:ann")
    _, doc = store.load_document(engine)
    assert {q.id: q.name for q in doc.queues} == {"billing": "Billing", "vip": "VIP"}
    assert revert.net_changes(engine, 2, result.version) == []


def test_undo_refuses_when_the_object_changed_again(engine) -> None:
    store.apply_document(engine, load_yaml(BASE), "test")
    store.create_object(engine, "queues", Queue(id="vip", name="VIP", select="true"), "a")
    store.replace_object(engine, "queues", "vip", Queue(id="vip", name="V", select="true"), "a")
    with pytest.raises(Conflict):
        revert.undo_version(engine, 2, "a")
    assert store.current_version(engine) == 3
