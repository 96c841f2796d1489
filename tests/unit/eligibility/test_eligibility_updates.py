"""Incremental updates: one expert or one queue at a time, equal to a fresh build every time."""

from __future__ import annotations

import random
from typing import Any

import pytest

from expertline.eligibility import CompiledSelection, EligibilityIndex
from support.eligibility import SKILL_ATTRS

ATTRS = SKILL_ATTRS
QUEUES = [
    ("billing", ["billing >= 50", "billing >= 20"]),
    ("tech-es", ["tech > 60 && 'es' in language", "tech > 30"]),
    ("emea", ["region.startsWith('emea') && certified"]),
    ("shared", ["billing >= 20"]),  # the same text as billing's step 1
    ("slow", ["region.matches('^a') || rating > 4.0"]),  # fallback path
]


def random_attrs(rng: random.Random) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if rng.random() < 0.7:
        attrs["billing"] = rng.randint(1, 100)
    if rng.random() < 0.5:
        attrs["tech"] = rng.randint(1, 100)
    if rng.random() < 0.6:
        attrs["rating"] = rng.choice([0.0, 2.5, 4.5, 5.0])
    if rng.random() < 0.5:
        attrs["certified"] = rng.random() < 0.5
    if rng.random() < 0.8:
        attrs["region"] = rng.choice(["emea", "emea-north", "amer", "apac", "new-region"])
    if rng.random() < 0.8:
        attrs["language"] = rng.sample(["en", "es", "fr", "de"], rng.randint(0, 3))
    return attrs


def test_update_reports_joins_and_leaves() -> None:
    index = EligibilityIndex(ATTRS, [("alice", {"billing": 30})], QUEUES)
    assert index.expert_matches("alice") == {("billing", 1), ("shared", 0)}

    change = index.update_expert("alice", {"billing": 70, "tech": 70, "language": ["es"]})
    assert change.joined == {("billing", 0), ("tech-es", 0), ("tech-es", 1)}
    assert change.left == set()
    assert index.matches("billing") == (frozenset({"alice"}), frozenset({"alice"}))

    change = index.update_expert("alice", {"billing": 10})
    assert change.left == {
        ("billing", 0),
        ("billing", 1),
        ("shared", 0),
        ("tech-es", 0),
        ("tech-es", 1),
    }
    assert not index.update_expert("alice", {"billing": 10})  # nothing changed

    change = index.remove_expert("alice")
    assert change.left == set() and index.expert_ids == []
    assert index.matches("billing") == (frozenset(), frozenset())


def test_only_selections_reading_changed_attributes_are_evaluated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index = EligibilityIndex(ATTRS, [("alice", {"billing": 30, "tech": 5})], QUEUES)
    evaluated: list[str] = []
    original = CompiledSelection.evaluate

    def spy(self: CompiledSelection, frame: Any) -> Any:
        evaluated.append(self.text)
        return original(self, frame)

    monkeypatch.setattr(CompiledSelection, "evaluate", spy)
    index.update_expert("alice", {"billing": 60, "tech": 5})
    assert sorted(evaluated) == ["billing >= 20", "billing >= 50"]  # not tech, region, ...
    evaluated.clear()
    index.update_expert("bob", {"tech": 99})  # a new expert: everything is evaluated once
    assert len(evaluated) == len({t for _, texts in QUEUES for t in texts}) - 1  # "slow" is CEL


def test_random_changes_match_a_fresh_build() -> None:
    """Hundreds of random updates, removals, re-adds and queue edits; after each batch the
    incremental index equals one built from scratch over the same state."""
    rng = random.Random(5)
    experts = {f"e{i}": random_attrs(rng) for i in range(30)}
    queues = dict(QUEUES)
    index = EligibilityIndex(ATTRS, experts.items(), queues.items())
    selects = [
        "billing > 40",
        "tech >= 10 && !certified",
        "'fr' in language || region == 'amer'",
        "language.exists(l, l.startsWith('d'))",
        "size(region) > 4",
        "rating >= 2.5 && billing % 3 == 1",
    ]
    for batch in range(12):
        for _ in range(25):
            op = rng.random()
            eid = f"e{rng.randint(0, 59)}"  # grows beyond the first capacity
            if op < 0.6:
                experts[eid] = random_attrs(rng)
                index.update_expert(eid, experts[eid])
            elif op < 0.8:
                experts.pop(eid, None)
                index.remove_expert(eid)
            elif op < 0.93:
                qid = rng.choice([*queues, f"new{batch}"])
                queues[qid] = rng.sample(selects, rng.randint(1, 3))
                index.set_queue(qid, queues[qid])
            elif queues:
                qid = rng.choice(list(queues))
                del queues[qid]
                index.remove_queue(qid)
        fresh = EligibilityIndex(ATTRS, experts.items(), queues.items())
        assert index.all_matches() == fresh.all_matches(), f"batch {batch}"
        assert sorted(index.expert_ids) == sorted(experts)


def test_queue_changes_report_before_and_after() -> None:
    experts = [("alice", {"billing": 80}), ("bob", {"billing": 30, "certified": True})]
    index = EligibilityIndex(ATTRS, experts, QUEUES)
    change = index.set_queue("billing", ["certified"])
    assert change.before == (frozenset({"alice"}), frozenset({"alice", "bob"}))
    assert change.after == (frozenset({"bob"}),)
    # The text billing used at step 1 lives on for the queue that shares it.
    assert index.matches("shared") == (frozenset({"alice", "bob"}),)
    assert not index.set_queue("billing", ["certified"])  # same selection: no change
    change = index.remove_queue("shared")
    assert change.after == ()
    assert index.queue_ids == ["billing", "tech-es", "emea", "slow"]
    assert index.selection_count() == (5, 4)
