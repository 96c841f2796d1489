"""The merge rule of redundant presence links, without servers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from expertline.presence.redundant import RedundantSource
from expertline.routing.model import Presence


@dataclass
class _Link:
    id: str
    up: bool = True


@dataclass
class _Port:
    told: list[tuple[str, Presence]] = field(default_factory=list)

    async def async_set_presence(self, expert_id: str, status: Presence, source: str) -> None:
        self.told.append((expert_id, status))


def test_available_while_a_live_link_says_so_and_none_said_otherwise_since() -> None:
    async def run() -> None:
        port = _Port()
        a, b = _Link("corp/1"), _Link("corp/2")
        source = RedundantSource("corp", port, [a, b], None)  # type: ignore[arg-type]
        await source.link_says(0, "al", "available")
        await source.link_says(1, "al", "available")
        assert source.presence_of("al") == "available"
        await source.link_says(1, "al", "away")  # newer and contrary: away
        assert source.presence_of("al") == "away"
        await source.link_says(0, "al", "dnd")
        await source.link_says(0, "al", "available")  # the newest again says available
        assert source.presence_of("al") == "available"
        b.up = False
        await source.link_says(1, "al", "offline")  # a link that is down has no opinion
        assert source.presence_of("al") == "available"
        a.up = False
        assert source.presence_of("al") == "offline"  # no live link: offline
        assert port.told == [
            ("al", "available"),
            ("al", "away"),
            ("al", "dnd"),
            ("al", "available"),
        ]
        assert source.presence_of("nobody") == "offline"

    asyncio.run(run())
