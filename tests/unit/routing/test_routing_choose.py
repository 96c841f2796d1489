"""Choosing experts: both paths of ``strategies.choose`` (walking a global ordering, scoring
the match set) and its shortcut for a task nobody had yet give what the plain definition
gives: untried experts by the queue's key, then (when allowed) experts out of cooldown by the
time their cooldown ended, then the key. The definition is kept here as the oracle."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expertline.routing import strategies
from expertline.routing.live import ExpertLive
from expertline.routing.model import ExpertSpec
from expertline.routing.strategies import UNTRIED, FreeIndex, choose

ORDERS = ["longest_idle", "most_skilled", "least_busy", "round_robin", "closest_match"]


def oracle_key(
    order: str,
    eid: str,
    live: dict[str, ExpertLive],
    specs: dict[str, ExpertSpec],
    rr_last: str | None,
    target: dict[str, float],
) -> tuple[Any, ...]:
    e = live[eid]
    if order == "least_busy":
        return (e.handled, e.idle_since, eid)
    if order == "most_skilled":
        return (strategies._skill_value(specs.get(eid), "s"), e.idle_since, eid)
    if order == "round_robin":
        return (rr_last is not None and eid <= rr_last, eid)
    if order == "closest_match":
        return (strategies.distance(target, specs.get(eid)), e.idle_since, eid)
    return (e.idle_since, eid)


def oracle(
    order: str,
    index: FreeIndex,
    live: dict[str, ExpertLive],
    match: frozenset[str],
    want: int,
    eligible: strategies.Eligibility,
    allow_tried: bool,
    rr_last: str | None,
    attributes: dict[str, Any],
) -> list[str]:
    target = strategies.numeric_attributes(attributes)

    def key(eid: str) -> tuple[Any, ...]:
        return oracle_key(order, eid, live, index.specs, rr_last, target)

    free = [eid for eid in sorted(index.members) if eid in match]
    untried = sorted((eid for eid in free if eligible(eid) == UNTRIED), key=key)
    out = untried[:want]
    if allow_tried and len(out) < want:
        tried = [(eligible(eid), key(eid)) for eid in free if eligible(eid) not in (None, UNTRIED)]
        out += [k[-1] for _, k in sorted(tried)[: want - len(out)]]
    return out


@st.composite
def situations(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 40))
    ids = [f"e{i:02d}" for i in range(n)]
    specs = {
        eid: ExpertSpec(
            eid,
            eid,
            f"sip:{eid}",
            numbers=draw(st.sampled_from([{}, {"s": float(draw(st.integers(0, 5)))}])),
        )
        for eid in ids
    }
    order = draw(st.sampled_from(ORDERS))
    index = FreeIndex(specs, {"s"}, {order})
    live: dict[str, ExpertLive] = {}
    for eid in ids:
        e = live[eid] = ExpertLive(eid)
        e.idle_since = float(draw(st.integers(0, 6)))  # ties are common: the id breaks them
        e.handled = draw(st.integers(0, 3))
        if draw(st.booleans()) or eid == ids[0]:
            index.add(e)
    match = frozenset(draw(st.sets(st.sampled_from(ids), min_size=1)))
    had = draw(st.dictionaries(st.sampled_from(ids), st.sampled_from([None, 1.0, 5.0, 9.0])))
    return {
        "order": order,
        "index": index,
        "live": live,
        "match": match,
        "had": had,  # None: has an open offer; else the end of the expert's cooldown
        "want": draw(st.integers(1, 6)),
        "allow_tried": draw(st.booleans()),
        "rr_last": draw(st.sampled_from([None, *ids])),
        "attributes": draw(st.sampled_from([{}, {"s": 2}, {"s": 4.5, "x": True}])),
    }


def eligibility(had: dict[str, float | None], now: float = 5.0) -> strategies.Eligibility:
    def eligible(eid: str) -> float | None:
        if eid not in had:
            return UNTRIED
        until = had[eid]
        return until if until is not None and now >= until else None

    return eligible


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(situations())
def test_choose_gives_the_plain_definition_on_every_path(s: dict[str, Any]) -> None:
    index, live, match, want = s["index"], s["live"], s["match"], s["want"]
    eligible = eligibility(s["had"])
    expected = oracle(
        s["order"], index, live, match, want, eligible, s["allow_tried"], s["rr_last"],
        s["attributes"],
    )  # fmt: skip
    free_in_match = len(match & index.members)
    if free_in_match == 0:
        return
    got = choose(
        index, live, s["order"], "s", match, free_in_match, want, eligible, s["allow_tried"],
        "t", 0, s["attributes"], s["rr_last"],
    )  # fmt: skip
    assert got == expected
    if s["order"] == "closest_match":
        return
    keys = strategies._keys_fn(index, live, s["order"], "s", s["rr_last"])
    scored = strategies._choose_scored(index, match, want, eligible, s["allow_tried"], keys)
    ordered, keyed = strategies._walk(index, s["order"], "s", s["rr_last"])
    walked = strategies._choose_walk(ordered, match, want, eligible, s["allow_tried"], keyed)
    assert scored == expected
    assert walked == expected


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(situations())
def test_nobody_had_it_shortcut_is_the_same_choice(s: dict[str, Any]) -> None:
    """``eligible=None`` (no open offer, no cooldown) chooses as an all-untried function."""
    index, live, match = s["index"], s["live"], s["match"]
    free_in_match = len(match & index.members)
    if free_in_match == 0:
        return  # the core does not ask then
    for order in [*ORDERS, "random"]:
        args = (index, live, order, "s", match, free_in_match, s["want"])
        rest = ("t", 3, s["attributes"], s["rr_last"])
        assert choose(*args, None, s["allow_tried"], *rest) == choose(  # type: ignore[arg-type]
            *args,  # type: ignore[arg-type]
            lambda eid: UNTRIED,
            s["allow_tried"],
            *rest,
        )
