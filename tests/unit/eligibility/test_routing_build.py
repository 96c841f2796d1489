"""The configuration document mapped onto the routing core's frozen model."""

from __future__ import annotations

from expertline.config.schema import ConfigDocument
from expertline.config.validate import load_yaml, require_valid
from expertline.eligibility import EligibilityIndex
from expertline.eligibility.build import build_routing_config
from expertline.routing.model import MAX_TASK_LIFETIME, EscalationStep, ExpertSpec, OnMaxWait

DOC = r"""
attributes:
  - {name: billing, type: proficiency}
  - {name: language, type: list, values: [en, es, fr]}
  - {name: certified, type: boolean}
  - {name: rating, type: number}
experts:
  - id: alice
    name: Alice Ng
    im: alice@example.test
    phone: sip:1001@pbx.example.test
    phones: ["+15551234567", "sip:alice-desk@pbx.example.test"]
    attributes: {billing: 80, language: [en, es], certified: true, rating: 4}
    max_tasks: 2
    may_decline: false
    locale: es
  - id: bob
    name: Bob
    phone: "+15550002"
    attributes: {billing: 30, language: [en]}
    enabled: false
queues:
  - id: billing-es
    name: Billing (Spanish)
    select: "billing >= 50 && 'es' in language"
    order: most_skilled
    skill: billing
    offer_to: all
    offer_timeout: 15s
    max_wait: 2m
    on_max_wait: {overflow: billing-any}
    wrap_up: 30s
    decline_cooldown: 1m
    max_no_answer: 3
    ring_timeout: 25s
    service_level: 10s
    max_task_lifetime: 2h
    escalate:
      - {after: 30s, select: "billing >= 20"}
      - {after: 1m30s, select: "true"}
    priority: 5
    accept_phones: '\+1\d{10}'
  - id: billing-any
    name: Billing
    select: "billing > 0"
    on_max_wait: {label: "sip:agents@cc.example.test"}
  - id: minimal
    name: Minimal
    select: "certified"
entry_points:
  - {dialed_number: "+18005550100", queue: billing-es}
  - {dialed_number: "+18005550101", queue: minimal}
"""


def test_document_maps_onto_the_core_model() -> None:
    config = build_routing_config(load_yaml(DOC), version=7)
    assert config.version == 7
    assert config.experts["alice"] == ExpertSpec(
        id="alice",
        name="Alice Ng",
        phone="sip:1001@pbx.example.test",
        im="alice@example.test",
        max_tasks=2,
        may_decline=False,
        enabled=True,
        locale="es",
        phones=("+15551234567", "sip:alice-desk@pbx.example.test"),
        numbers={"billing": 80.0, "rating": 4.0},
    )
    assert config.experts["bob"].phones == ()
    # Absent numeric attributes take their default, 0, like everywhere else.
    assert config.experts["bob"].numbers == {"billing": 30.0, "rating": 0.0}
    assert config.experts["bob"].enabled is False and config.experts["bob"].im is None

    q = config.queues["billing-es"]
    assert (q.order, q.skill, q.offer_to, q.priority) == ("most_skilled", "billing", None, 5)
    assert (q.offer_timeout, q.max_wait, q.wrap_up, q.decline_cooldown) == (15, 120, 30, 60)
    assert (q.ring_timeout, q.service_level, q.max_no_answer) == (25, 10, 3)
    assert q.max_task_lifetime == 7200
    assert q.accept_phones == r"\+1\d{10}" and config.queues["minimal"].accept_phones is None
    assert q.on_max_wait == OnMaxWait("overflow", "billing-any")
    assert q.escalate == (EscalationStep(after=30.0), EscalationStep(after=90.0))
    assert config.queues["billing-any"].on_max_wait == OnMaxWait(
        "label", "sip:agents@cc.example.test"
    )
    m = config.queues["minimal"]
    assert (m.order, m.offer_to, m.offer_timeout, m.max_wait) == ("longest_idle", 1, 20, 300)
    assert (
        m.max_task_lifetime == MAX_TASK_LIFETIME == 8 * 3600
    )  # the schema's default is the core's
    assert m.on_max_wait == OnMaxWait("reject", None) and m.escalate == ()

    assert config.matches == {
        "billing-es": (
            frozenset({"alice"}),
            frozenset({"alice", "bob"}),
            frozenset({"alice", "bob"}),
        ),
        "billing-any": (frozenset({"alice", "bob"}),),
        "minimal": (frozenset({"alice"}),),
    }
    assert config.entry_points == {"+18005550100": "billing-es", "+18005550101": "minimal"}


def changed(doc: ConfigDocument, **sections: object) -> ConfigDocument:
    data = doc.model_dump(mode="json")
    data.update(sections)
    return require_valid(data)


def test_a_live_index_is_synced_not_rebuilt() -> None:
    doc = load_yaml(DOC)
    index = EligibilityIndex.from_document(doc)
    first = build_routing_config(doc, 1, index)

    data = doc.model_dump(mode="json")
    experts = data["experts"]
    experts[1]["attributes"] = {"billing": 90, "language": ["es"]}
    experts.append(
        {"id": "carol", "name": "Carol", "phone": "+1555", "attributes": {"certified": True}}
    )
    queues = [q for q in data["queues"] if q["id"] != "minimal"]
    queues[0]["select"] = "billing >= 85"
    entry_points = [e for e in data["entry_points"] if e["queue"] != "minimal"]
    second_doc = changed(doc, experts=experts, queues=queues, entry_points=entry_points)

    second = build_routing_config(second_doc, 2, index)
    assert second.matches == {
        "billing-es": (
            frozenset({"bob"}),
            frozenset({"alice", "bob"}),
            frozenset({"alice", "bob", "carol"}),
        ),
        "billing-any": (frozenset({"alice", "bob"}),),
    }
    assert second.matches == build_routing_config(second_doc, 2).matches  # same as fresh
    assert first.matches["minimal"] == (frozenset({"alice"}),)  # the old version is untouched
    assert index.queue_ids == ["billing-es", "billing-any"]
    # Unchanged match sets are the very same objects: a new version shares them.
    assert second.matches["billing-any"][0] is first.matches["billing-any"][0]


def test_new_attribute_declarations_rebuild_the_index() -> None:
    doc = load_yaml(DOC)
    index = EligibilityIndex.from_document(doc)
    data = doc.model_dump(mode="json")
    data["attributes"].append({"name": "region", "type": "string"})
    data["queues"][2]["select"] = "region == ''"
    new = require_valid(data)
    assert index.sync(new).startswith("rebuilt")
    assert build_routing_config(new, 2, index).matches["minimal"] == (frozenset({"alice", "bob"}),)
