"""Queue orders: which expert gets the offer, ties by longest idle then id."""

from __future__ import annotations

import pytest
from routing_sim import Sim, config, expert

from expertline.routing.events import (
    CallEnded,
    OfferAccepted,
    TaskAbandoned,
    TaskCreated,
)
from expertline.routing.model import QueueSpec


def first_offer(sim: Sim, task_id: str, queue: str = "q", **kw: object) -> str:
    out = sim.send(TaskCreated(task_id, queue, **kw))  # type: ignore[arg-type]
    offers = [
        c.expert_id for c in out if hasattr(c, "offer_id") and type(c).__name__ == "SendOffer"
    ]
    assert offers, out
    return offers[0]


def test_longest_idle_prefers_the_expert_available_longest() -> None:
    sim = Sim(config([expert("a"), expert("b"), expert("c")], [QueueSpec("q", "Q")]))
    sim.available("b", step=1)
    sim.available("c", step=1)
    sim.available("a", step=1)
    assert first_offer(sim, "t1") == "b"
    assert first_offer(sim, "t2") == "c"
    assert first_offer(sim, "t3") == "a"


def test_ties_break_by_longest_idle_then_id() -> None:
    sim = Sim(config([expert("b"), expert("a")], [QueueSpec("q", "Q")]))
    sim.available("b", "a")  # same instant: same idle time
    assert first_offer(sim, "t1") == "a"


def test_longest_idle_counts_from_the_end_of_the_last_task() -> None:
    sim = Sim(config([expert("a"), expert("b")], [QueueSpec("q", "Q")]))
    sim.available("a", step=1)
    sim.available("b", step=1)
    assert first_offer(sim, "t1") == "a"
    sim.send(OfferAccepted(sim.open_offer("a")))
    sim.now += 5
    sim.send(CallEnded("t1"))  # a idle since now, b idle since earlier
    assert first_offer(sim, "t2") == "b"


def test_most_skilled_uses_the_queue_skill_and_puts_missing_numbers_last() -> None:
    experts = [
        expert("a", numbers={"billing": 40}),
        expert("b", numbers={"billing": 90}),
        expert("c"),
        expert("d", numbers={"billing": 70}),
    ]
    sim = Sim(config(experts, [QueueSpec("q", "Q", order="most_skilled", skill="billing")]))
    sim.available("c", "a", "b", "d")
    got = [first_offer(sim, f"t{i}") for i in range(4)]
    assert got == ["b", "d", "a", "c"]


def test_least_busy_prefers_fewest_tasks_handled_then_longest_idle() -> None:
    sim = Sim(
        config([expert("a"), expert("b"), expert("c")], [QueueSpec("q", "Q", order="least_busy")])
    )

    def handle(task_id: str) -> str:
        eid = first_offer(sim, task_id)
        sim.send(OfferAccepted(sim.open_offer(eid)))
        sim.now += 1
        sim.send(CallEnded(task_id))
        sim.now += 1
        return eid

    sim.available("a")
    assert [handle("x0"), handle("x1")] == ["a", "a"]
    sim.available("b")
    assert handle("x2") == "b"
    sim.available("c")  # handled: a 2, b 1, c 0; c idle the shortest
    assert handle("t1") == "c"
    assert handle("t2") == "b"  # b and c handled 1 each: b idle longer
    assert handle("t3") == "c"
    assert handle("t4") == "a"  # all at 2 now: a idle the longest


def test_round_robin_rotates_per_queue() -> None:
    sim = Sim(
        config([expert("a"), expert("b"), expert("c")], [QueueSpec("q", "Q", order="round_robin")])
    )
    sim.available("a", "b", "c")
    got = []
    for i in range(5):
        eid = first_offer(sim, f"t{i}")
        got.append(eid)
        sim.send(OfferAccepted(sim.open_offer(eid)))
        sim.send(CallEnded(f"t{i}"))
    assert got == ["a", "b", "c", "a", "b"]


def test_random_is_deterministic_per_task_and_spreads() -> None:
    def run() -> list[str]:
        sim = Sim(config([expert(x) for x in "abcdefgh"], [QueueSpec("q", "Q", order="random")]))
        sim.available(*"abcdefgh")
        out = []
        for i in range(12):
            out.append(first_offer(sim, f"t{i}"))
            sim.send(TaskAbandoned(f"t{i}"))  # everybody free again
        return out

    first, second = run(), run()
    assert first == second
    assert len(set(first)) > 2


def test_closest_match_ranks_by_distance_to_the_task_attributes() -> None:
    experts = [
        expert("far", numbers={"age": 20, "income": 10}),
        expert("near", numbers={"age": 41, "income": 52}),
        expert("mid", numbers={"age": 30, "income": 50}),
        expert("none"),
    ]
    sim = Sim(config(experts, [QueueSpec("q", "Q", order="closest_match", offer_to=None)]))
    sim.available("far", "near", "mid", "none")
    out = sim.send(TaskCreated("t", "q", attributes={"age": 40, "income": 50, "vip": True}))
    order = [c.expert_id for c in out if type(c).__name__ == "SendOffer"]
    assert order == ["near", "mid", "far", "none"]


@pytest.mark.parametrize(
    "order",
    ["longest_idle", "most_skilled", "least_busy", "round_robin", "random", "closest_match"],
)
def test_every_order_only_offers_matching_free_experts(order: str) -> None:
    experts = [expert(x, numbers={"s": i}) for i, x in enumerate("abcdef")]
    q = QueueSpec("q", "Q", order=order, skill="s", offer_to=None)  # type: ignore[arg-type]
    sim = Sim(config(experts, [q], matches={"q": ({"a", "c", "e"},)}))
    sim.available("a", "b", "c", "d")  # e is offline
    sim.send(TaskCreated("t", "q", attributes={"s": 3}))
    assert sorted(sim.offered_to("t")) == ["a", "c"]


def test_large_pools_choose_like_small_ones() -> None:
    """The walk over global orderings and the scoring of the match set agree."""
    n = 400
    experts = [expert(f"e{i:03d}", numbers={"s": (i * 37) % 101}) for i in range(n)]
    for order in ("longest_idle", "most_skilled", "least_busy"):
        narrow = {f"e{i:03d}" for i in range(0, n, 50)}  # small match set: scoring path
        wide = {f"e{i:03d}" for i in range(n)}  # big match set: walking path
        queues = [
            QueueSpec("narrow", "N", order=order, skill="s", offer_to=3),  # type: ignore[arg-type]
            QueueSpec("wide", "W", order=order, skill="s", offer_to=3),  # type: ignore[arg-type]
        ]
        sim = Sim(config(experts, queues, matches={"narrow": (narrow,), "wide": (wide,)}))
        for i in range(n):
            sim.available(f"e{i:03d}", step=0.5)
        sim.send(TaskCreated("w", "wide"))
        sim.send(TaskCreated("n", "narrow"))
        w, nn = sim.offered_to("w"), sim.offered_to("n")
        assert len(w) == 3 and len(nn) == 3
        if order == "most_skilled":
            assert (
                w == sorted(wide, key=lambda e: (-experts[int(e[1:])].numbers["s"], int(e[1:])))[:3]
            )
            rest = narrow - set(w)
            assert (
                nn
                == sorted(rest, key=lambda e: (-experts[int(e[1:])].numbers["s"], int(e[1:])))[:3]
            )
        else:
            assert w == ["e000", "e001", "e002"]
            assert nn == sorted(narrow - set(w))[:3]


def test_round_robin_rotates_the_same_way_on_both_paths() -> None:
    n = 300
    experts = [expert(f"e{i:03d}") for i in range(n)]
    narrow = {f"e{i:03d}" for i in range(0, n, 60)}  # 5 members: scoring path
    wide = {f"e{i:03d}" for i in range(n)}  # everyone: walking path
    queues = [
        QueueSpec("narrow", "N", order="round_robin"),
        QueueSpec("wide", "W", order="round_robin"),
    ]
    sim = Sim(config(experts, queues, matches={"narrow": (narrow,), "wide": (wide,)}))
    sim.available(*sorted(wide))
    got: dict[str, list[str]] = {"narrow": [], "wide": []}
    for i in range(7):
        for q in ("narrow", "wide"):
            eid = first_offer(sim, f"{q}{i}", queue=q)
            got[q].append(eid)
            sim.send(OfferAccepted(sim.open_offer(eid)))
            sim.send(CallEnded(f"{q}{i}"))
    assert got["narrow"] == ["e000", "e060", "e120", "e180", "e240", "e000", "e060"]
    assert got["wide"] == [f"e{i:03d}" for i in range(7)]
