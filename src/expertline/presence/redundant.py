"""Redundant presence links: one presence source over several XMPP servers or accounts.

A ``RedundantSource`` keeps every link (each an ``XmppSource``) connected at once and is what
the runtime sees: one presence source, one expert channel.

- **Presence is merged.** Each link tells its view through its own ``LinkPort``; the merge
  keeps, per expert, the latest report of every link that is up. An expert is available when
  a live link says so and no live link has said anything else since; otherwise the latest
  live report counts; with no live link, offline. A link that goes down has no opinion (its
  "everyone offline" is about the link, not the experts), so losing one link changes no
  expert whom another link still sees.
- **Offers go out over a live link** (the first that reaches the expert). When a link is lost,
  the offers still open that went out over it are sent again over a live one, so no offer is
  lost with the link; answers come back over whichever link the expert writes to.
- **Health**: each link reports ``presence:<id>/<n>`` as not required; the source reports
  ``presence:<id>`` up while any link is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from typing import Any

from expertline.health import Health
from expertline.routing.model import ExpertSpec, Presence
from expertline.runtime.ports import OfferView, RoutingPort

log = logging.getLogger("expertline.presence.redundant")

WATCH_INTERVAL = 0.2  # seconds between looks at the links' states


class LinkPort:
    """The ``RoutingPort`` one link sees: presence goes through the merge, the rest through."""

    def __init__(self, owner: RedundantSource, index: int) -> None:
        self._owner = owner
        self._index = index

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner.port, name)

    async def async_set_presence(self, expert_id: str, status: Presence, source: str) -> None:
        await self._owner.link_says(self._index, expert_id, status)


class RedundantSource:
    """Several links (``XmppSource``), one presence source and expert channel."""

    def __init__(
        self,
        source_id: str,
        port: RoutingPort,
        links: Sequence[Any],
        health: Health | None,
        links_later: bool = False,
    ) -> None:
        """``links`` are ``XmppSource`` objects built over ``LinkPort(self, index)``; with
        ``links_later`` they are set afterwards (they need this object), then
        ``reset_views()``."""
        if len(links) < 2 and not links_later:
            raise ValueError("a redundant source needs at least two links")
        self.id = source_id
        self.name = f"xmpp:{source_id}"
        self.port = port
        self.links = list(links)
        self._health = health
        self._stamp = itertools.count(1)
        self._told: dict[str, Presence] = {}
        self._via: dict[str, tuple[int, OfferView]] = {}  # offer id -> (link, offer)
        self._watcher: asyncio.Task[None] | None = None
        self.reset_views()

    def reset_views(self) -> None:
        self._views: list[dict[str, tuple[Presence, int]]] = [{} for _ in self.links]
        self._was_up = [False] * len(self.links)

    @property
    def up(self) -> bool:
        return any(link.up for link in self.links)

    @property
    def address(self) -> str:
        live = self._live()
        return str((live[0] if live else self.links[0]).address)

    def _live(self) -> list[Any]:
        return [link for link in self.links if link.up]

    # -- lifecycle ---------------------------------------------------------------------------

    async def async_start(self) -> None:
        self._report_health()
        for link in self.links:
            await link.async_start()
        self._watcher = asyncio.create_task(self._watch(), name=f"{self.name}:links")

    async def async_stop(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        for link in self.links:
            await link.async_stop()
        if self._health is not None:
            self._health.report(f"presence:{self.id}", False, "stopped")

    async def async_config_changed(self) -> None:
        for link in self.links:
            await link.async_config_changed()

    def resync_presence(self) -> None:
        self._told.clear()
        for link in self.links:
            link.resync_presence()

    # -- the merge ---------------------------------------------------------------------------

    async def link_says(self, index: int, expert_id: str, status: Presence) -> None:
        if not self.links[index].up:
            return  # a link that is down has no opinion about the experts
        self._views[index][expert_id] = (status, next(self._stamp))
        await self._tell(expert_id)

    def presence_of(self, expert_id: str) -> Presence:
        latest: tuple[Presence, int] | None = None
        for link, view in zip(self.links, self._views, strict=True):
            said = view.get(expert_id)
            if link.up and said is not None and (latest is None or said[1] > latest[1]):
                latest = said
        return Presence.OFFLINE if latest is None else latest[0]

    async def _tell(self, expert_id: str) -> None:
        status = self.presence_of(expert_id)
        if self._told.get(expert_id) == status:
            return
        await self.port.async_set_presence(expert_id, status, self.id)
        self._told[expert_id] = status
        log.info("presence merged source=%s expert=%s status=%s", self.id, expert_id, status)

    async def _watch(self) -> None:
        """Follow the links' states: a lost link's views go, its open offers move."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                await self._look()
            except Exception:
                log.exception("following the links failed source=%s", self.id)

    async def _look(self) -> None:
        """A link that is down keeps no views and carries no open offer (however briefly it
        was up: this looks at what it holds, not at the transitions it saw)."""
        changed = False
        for index, link in enumerate(self.links):
            if not link.up:
                holds = bool(self._views[index]) or any(i == index for i, _ in self._via.values())
                if holds or self._was_up[index]:
                    log.warning(
                        "presence link lost source=%s link=%s; %d of %d links up",
                        self.id,
                        link.id,
                        len(self._live()),
                        len(self.links),
                    )
                experts = list(self._views[index])
                self._views[index].clear()
                for expert_id in experts:
                    with contextlib.suppress(Exception):  # the link's worker retries
                        await self._tell(expert_id)
                await self._move_offers(index)
            if self._was_up[index] != link.up:
                changed = True
            self._was_up[index] = link.up
        if changed:
            self._report_health()

    async def _move_offers(self, lost: int) -> None:
        if not self._live():
            return  # nowhere to move them yet; the first link back takes them
        for offer_id, (index, offer) in list(self._via.items()):
            if index != lost:
                continue
            still_open = any(o.id == offer_id for o in self.port.open_offers(offer.expert_id))
            if not still_open:
                del self._via[offer_id]
                continue
            log.info("offer sent again over a live link source=%s offer=%s", self.id, offer_id)
            await self.async_offer(offer)

    def _report_health(self) -> None:
        if self._health is None:
            return
        live = [link.id for link in self._live()]
        detail = (
            f"{len(live)} of {len(self.links)} links up ({', '.join(live)})"
            if live
            else f"no link up of {len(self.links)}"
        )
        self._health.report(f"presence:{self.id}", bool(live), detail)

    # -- ExpertChannel -----------------------------------------------------------------------

    def reaches(self, expert: ExpertSpec) -> bool:
        return any(link.reaches(expert) for link in self.links)

    def _link_for(self, expert_id: str, prefer: int | None = None) -> tuple[int, Any] | None:
        expert = self.port.expert(expert_id)
        if expert is None:
            return None
        order = list(range(len(self.links)))
        if prefer is not None:
            order.remove(prefer)
            order.insert(0, prefer)
        for index in order:
            link = self.links[index]
            if link.up and link.reaches(expert):
                return index, link
        return None

    async def async_offer(self, offer: OfferView) -> None:
        chosen = self._link_for(offer.expert_id)
        if chosen is None:
            log.warning("offer not sent source=%s offer=%s reason=no-live-link", self.id, offer.id)
            return
        index, link = chosen
        self._via[offer.id] = (index, offer)
        if len(self._via) > 10000:
            del self._via[next(iter(self._via))]
        await link.async_offer(offer)

    async def async_withdrawn(self, offer: OfferView, reason: str) -> None:
        went = self._via.pop(offer.id, None)
        chosen = self._link_for(offer.expert_id, went[0] if went else None)
        if chosen is not None:
            await chosen[1].async_withdrawn(offer, reason)

    async def async_accepted(self, offer: OfferView) -> None:
        went = self._via.pop(offer.id, None)
        chosen = self._link_for(offer.expert_id, went[0] if went else None)
        if chosen is not None:
            await chosen[1].async_accepted(offer)

    async def async_notice(self, expert: ExpertSpec, message: str, count: int = 0) -> None:
        chosen = self._link_for(expert.id)
        if chosen is not None:
            await chosen[1].async_notice(expert, message, count)
