"""Choosing experts for a task: the queue orders over the set of *free* experts.

A free expert can take one more offer now: enabled, available, not in wrap-up, active tasks +
pending offers below ``max_tasks``. ``FreeIndex`` keeps the free experts in a few global
orderings (longest idle, least busy, by each skill in use, by id) so that choosing costs about
the number of experts looked at, not the number configured:

- when the queue's match set is large compared with the free set, walk the global ordering and
  test membership in the match set until enough are found;
- when it is small, filter the match set and sort only those.

Ties are broken by longest idle, then expert id. ``random`` is seeded from the task id and its
offer counter, so replaying the same events gives the same choice. ``closest_match`` scores
every candidate (Cisco's spatial routing): it costs the smaller of the match set and the free
set.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from operator import itemgetter
from typing import Any

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from expertline.routing.live import ExpertLive
from expertline.routing.model import ExpertSpec, Order

# Walking the global ordering costs about want * free / free_in_match steps; scoring the
# match set costs about len(match) key computations, each this many times dearer than a step.
SCORE_COST = 8

UNTRIED = -math.inf

Eligibility = Callable[[str], float | None]
"""None: not eligible for this task; ``UNTRIED``; else the time the expert's cooldown for this
task ended (they declined or ignored it before): those who had it longest ago come first."""


def _skill_value(spec: ExpertSpec | None, skill: str) -> float:
    if spec is None:
        return math.inf
    value = spec.numbers.get(skill)
    return math.inf if value is None else -float(value)


def numeric_attributes(attributes: dict[str, Any]) -> dict[str, float]:
    """The task attributes ``closest_match`` compares (numbers only, booleans excluded)."""
    return {
        k: float(v)
        for k, v in attributes.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def distance(target: dict[str, float], spec: ExpertSpec | None) -> float:
    """Euclidean distance over the task's numeric attributes; a missing number is infinitely far."""
    if not target:
        return 0.0
    if spec is None:
        return math.inf
    total = 0.0
    for name, want in target.items():
        have = spec.numbers.get(name)
        if have is None:
            return math.inf
        total += (float(have) - want) ** 2
    return math.sqrt(total)


class FreeIndex:
    """Global orderings of the free experts, updated as experts come and go."""

    def __init__(
        self, specs: dict[str, ExpertSpec], skills: Iterable[str], orders: Iterable[str] = ()
    ) -> None:
        """Only the orderings some queue uses are kept (``orders``; ``skills`` for
        most_skilled); longest idle always is, as it breaks ties everywhere."""
        used = set(orders)
        self.specs = specs
        self.members: set[str] = set()
        self.idle: SortedList = SortedList()  # (idle_since, id)
        self.busy: SortedList | None = SortedList() if "least_busy" in used else None
        self.ids: SortedList | None = SortedList() if used & {"round_robin", "random"} else None
        self.skill: dict[str, SortedList] = {s: SortedList() for s in sorted(set(skills))}

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, expert_id: str) -> bool:
        return expert_id in self.members

    def add(self, e: ExpertLive) -> None:
        if e.indexed is not None:
            self.remove(e)
        eid = e.id
        spec = self.specs.get(eid)
        self.members.add(eid)
        self.idle.add((e.idle_since, eid))
        if self.busy is not None:
            self.busy.add((e.handled, e.idle_since, eid))
        if self.ids is not None:
            self.ids.add(eid)
        for name, lst in self.skill.items():
            lst.add((_skill_value(spec, name), e.idle_since, eid))
        e.indexed = (e.idle_since, e.handled)

    def remove(self, e: ExpertLive) -> None:
        if e.indexed is None:
            return
        idle_since, handled = e.indexed
        eid = e.id
        spec = self.specs.get(eid)
        self.members.discard(eid)
        self.idle.remove((idle_since, eid))
        if self.busy is not None:
            self.busy.remove((handled, idle_since, eid))
        if self.ids is not None:
            self.ids.remove(eid)
        for name, lst in self.skill.items():
            lst.remove((_skill_value(spec, name), idle_since, eid))
        e.indexed = None

    def same_keys(self, e: ExpertLive) -> bool:
        indexed = e.indexed
        if indexed is None or indexed[0] != e.idle_since:
            return False
        return self.busy is None or indexed[1] == e.handled


def choose(
    index: FreeIndex,
    live: dict[str, ExpertLive],
    order: Order,
    skill: str | None,
    match: frozenset[str],
    free_in_match: int,
    want: int,
    eligible: Eligibility | None,
    allow_tried: bool,
    task_id: str,
    seed_n: int,
    attributes: dict[str, Any],
    rr_last: str | None,
) -> list[str]:
    """Up to ``want`` expert ids for one task, best first: untried experts, then (when
    ``allow_tried``) experts who declined or ignored it before and are out of cooldown.

    ``eligible`` None: every free expert in the match set is untried (nobody had the task),
    which spares a call per candidate."""
    if want <= 0 or not index.members or not match:
        return []
    if order == "most_skilled" and (skill is None or skill not in index.skill):
        order = "longest_idle"
    if order == "random":
        return _choose_random(
            index, match, free_in_match, want, eligible, allow_tried, task_id, seed_n
        )
    if order == "closest_match":
        return _choose_scored(
            index, match, want, eligible, allow_tried, _closest_keys(index, live, attributes)
        )
    if free_in_match <= 0:
        return []
    walk_cost = want * len(index.members) / free_in_match
    if walk_cost > SCORE_COST * len(match):
        return _choose_scored(
            index, match, want, eligible, allow_tried, _keys_fn(index, live, order, skill, rr_last)
        )
    ordered, keyed = _walk(index, order, skill, rr_last)
    return _choose_walk(ordered, match, want, eligible, allow_tried, keyed)


Keys = Callable[[Iterable[str]], list[tuple[Any, ...]]]
"""The ordering keys of some expert ids, each ending with the id (smallest key first)."""


def _keys_fn(
    index: FreeIndex,
    live: dict[str, ExpertLive],
    order: Order,
    skill: str | None,
    rr_last: str | None,
) -> Keys:
    # One comprehension per call rather than a key function per expert: scoring a match set
    # is the most frequent choice (a narrow queue among many free experts).
    specs = index.specs
    if order == "least_busy":
        return lambda ids: [(live[eid].handled, live[eid].idle_since, eid) for eid in ids]
    if order == "most_skilled" and skill is not None:
        return lambda ids: [
            (_skill_value(specs.get(eid), skill), live[eid].idle_since, eid) for eid in ids
        ]
    if order == "round_robin":
        last = rr_last
        return lambda ids: [(last is not None and eid <= last, eid) for eid in ids]
    return lambda ids: [(live[eid].idle_since, eid) for eid in ids]


def _closest_keys(
    index: FreeIndex, live: dict[str, ExpertLive], attributes: dict[str, Any]
) -> Keys:
    target = numeric_attributes(attributes)
    specs = index.specs
    return lambda ids: [
        (distance(target, specs.get(eid)), live[eid].idle_since, eid) for eid in ids
    ]


def _walk(
    index: FreeIndex, order: Order, skill: str | None, rr_last: str | None
) -> tuple[Iterable[Any], bool]:
    """The ordering to walk, and whether its items are key tuples ending with the expert id
    (rather than bare ids)."""
    if order == "least_busy" and index.busy is not None:
        return index.busy, True
    if order == "most_skilled" and skill is not None:
        return index.skill[skill], True
    if order == "round_robin" and index.ids is not None:
        if rr_last is None:
            return index.ids, False
        return _chain(
            index.ids.irange(minimum=rr_last, inclusive=(False, True)),
            index.ids.irange(maximum=rr_last, inclusive=(True, True)),
        ), False
    return index.idle, True


def _chain(*parts: Iterable[str]) -> Iterator[str]:
    for part in parts:
        yield from part


_LAST = itemgetter(-1)


def _choose_walk(
    ordered: Iterable[Any],
    match: frozenset[str],
    want: int,
    eligible: Eligibility | None,
    allow_tried: bool,
    keyed: bool = False,
) -> list[str]:
    # The walk skips most experts (not in the match set): filter in C, not in a Python loop.
    in_match = filter(match.__contains__, map(_LAST, ordered) if keyed else ordered)
    if eligible is None:
        return list(islice(in_match, want))
    first: list[str] = []
    tried: list[tuple[float, int, str]] = []
    for pos, eid in enumerate(in_match):
        kind = eligible(eid)
        if kind is None:
            continue
        if kind == UNTRIED:
            first.append(eid)
            if len(first) >= want:
                break
        elif allow_tried:
            tried.append((kind, pos, eid))
    if len(first) < want and tried:
        first += [eid for _, _, eid in heapq.nsmallest(want - len(first), tried)]
    return first


def _candidates(index: FreeIndex, match: frozenset[str]) -> list[str]:
    """The free experts in the match set, found from whichever set is smaller."""
    members = index.members
    if len(match) <= len(members):
        return [eid for eid in match if eid in members]
    return [eid for eid in members if eid in match]


def _choose_scored(
    index: FreeIndex,
    match: frozenset[str],
    want: int,
    eligible: Eligibility | None,
    allow_tried: bool,
    keys: Keys,
) -> list[str]:
    candidates = _candidates(index, match)
    if eligible is None:
        return [key[-1] for key in heapq.nsmallest(want, keys(candidates))]
    first: list[str] = []
    tried: list[tuple[float, str]] = []
    for eid in candidates:
        kind = eligible(eid)
        if kind is None:
            continue
        if kind == UNTRIED:
            first.append(eid)
        elif allow_tried:
            tried.append((kind, eid))
    out = [key[-1] for key in heapq.nsmallest(want, keys(first))]
    if len(out) < want and tried:
        ranked = zip([kind for kind, _ in tried], keys([eid for _, eid in tried]), strict=True)
        out += [key[-1] for _, key in heapq.nsmallest(want - len(out), ranked)]
    return out


def _choose_random(
    index: FreeIndex,
    match: frozenset[str],
    free_in_match: int,
    want: int,
    eligible: Eligibility | None,
    allow_tried: bool,
    task_id: str,
    seed_n: int,
) -> list[str]:
    rng = random.Random(f"{task_id}:{seed_n}")
    walk_cost = want * len(index.members) / free_in_match
    ids = index.ids
    if ids is None or walk_cost > SCORE_COST * len(match) or len(match) <= 4096:
        first: list[str] = []
        tried: list[tuple[float, str]] = []
        for eid in sorted(_candidates(index, match)):
            kind = UNTRIED if eligible is None else eligible(eid)
            if kind is None:
                continue
            if kind == UNTRIED:
                first.append(eid)
            elif allow_tried:
                tried.append((kind, eid))
        out = rng.sample(first, min(want, len(first)))
        if len(out) < want and tried:
            out += [eid for _, eid in sorted(tried)[: want - len(out)]]
        return out
    # Many free experts and a broad match set: start the walk at a random place.
    start = rng.randrange(len(ids))
    ordered = _chain(ids.islice(start, None), ids.islice(0, start))
    return _choose_walk(ordered, match, want, eligible, allow_tried)
