"""XMPP presence -> routing presence, and the multi-device rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from expertline.presence.mapping import (
    RANK,
    RosterPresence,
    StatusMap,
    StatusMapError,
    most_available,
)


def test_default_map() -> None:
    m = StatusMap.parse(None)
    assert [m.map(s) for s in (None, "", "chat", "away", "xa", "dnd")] == [
        "available",
        "available",
        "available",
        "away",
        "away",
        "dnd",
    ]


def test_configured_map_and_unmapped_shows_are_away() -> None:
    m = StatusMap.parse({"available": ["online"], "dnd": ["dnd", "xa"]})
    assert m.map("chat") == "away"  # not named: never makes an expert available
    assert m.map(None) == "available"
    assert m.map("xa") == "dnd"
    assert m.map("bogus") == "away"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"busy": ["dnd"]}, "status_map.busy: expected available, away or dnd"),
        ({"available": ["online", "lunch"]}, "unknown XMPP show 'lunch'"),
        ({"available": ["away"], "away": ["away"]}, "'away' is already mapped to available"),
    ],
)
def test_bad_maps_are_clear_errors(raw: dict[str, list[str]], message: str) -> None:
    with pytest.raises(StatusMapError, match=message):
        StatusMap.parse(raw)


def test_most_available_resource_wins_and_changes_are_reported_once() -> None:
    roster = RosterPresence(StatusMap.parse(None))
    assert roster.update("alice@x", "phone", "away", True) == "away"
    assert roster.update("alice@x", "desk", None, True) == "available"
    assert roster.update("alice@x", "phone", "dnd", True) is None  # desk still online
    assert roster.update("alice@x", "desk", None, False) == "dnd"
    assert roster.update("alice@x", "phone", None, False) == "offline"
    assert roster.online() == []
    assert roster.update("alice@x", "phone", None, False) is None


def test_clear_and_contact_gone() -> None:
    roster = RosterPresence(StatusMap.parse(None))
    roster.update("a@x", "r", None, True)
    roster.update("b@x", "r", "away", True)
    assert roster.contact_gone("a@x") == "offline"
    assert roster.contact_gone("a@x") is None
    assert roster.clear() == ["b@x"]
    assert roster.aggregate("b@x") == "offline"


@pytest.mark.slow
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["r1", "r2", "r3"]),
            st.sampled_from([None, "chat", "away", "xa", "dnd"]),
            st.booleans(),
        ),
        max_size=30,
    )
)
def test_aggregate_is_always_the_best_live_resource(
    events: list[tuple[str, str | None, bool]],
) -> None:
    roster = RosterPresence(StatusMap.parse(None))
    live: dict[str, str | None] = {}
    for resource, show, available in events:
        roster.update("e@x", resource, show, available)
        if available:
            live[resource] = show
        else:
            live.pop(resource, None)
    expected = most_available(roster.status_map.map(s) for s in live.values())
    assert roster.aggregate("e@x") == expected
    assert all(RANK[roster.aggregate("e@x")] >= RANK[p] for p in roster.resources("e@x").values())
