"""Effects delivery: what a committed batch tells experts, through their channels (IM, ...).

An effect is queued only after the batch holding its outbox row has committed; it is
performed in order, each attempt bounded in time, with up to three attempts and growing
pauses. Done or given up, its outbox row id is handed back (``done``) so the next batch
deletes the row; a restart performs again whatever was not handed back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from expertline.routing.model import ExpertSpec
from expertline.runtime.ports import ExpertChannel, OfferView
from expertline.runtime.projection import offer_from_payload

log = logging.getLogger("expertline.runtime")

ATTEMPTS = 3
ATTEMPT_TIMEOUT = 10.0  # seconds one channel call may take
FIRST_PAUSE = 0.2  # seconds before the second attempt; each later pause is 4 times longer


@dataclass
class Effect:
    """A channel effect to perform after commit; ``outbox_id`` is its durable row, if any."""

    channel: ExpertChannel
    kind: str  # offer | withdrawn | accepted | notice
    payload: dict[str, Any]
    outbox_id: int | None


class EffectDelivery:
    """Performs committed effects in order; ``done`` collects their outbox ids.

    ``offer``: the current view of an offer (None: the core forgot it); ``expert``: the
    expert's spec (None: no longer configured); ``wake``: called when the first outbox id of
    a batch is handed back, so an idle runtime still writes a batch to delete it."""

    def __init__(
        self,
        offer: Callable[[str], OfferView | None],
        expert: Callable[[str], ExpertSpec | None],
        wake: Callable[[], None],
        *,
        pause: float = FIRST_PAUSE,
    ) -> None:
        self._offer = offer
        self._expert = expert
        self._wake = wake
        self._pause = pause
        self._queue: asyncio.Queue[Effect | None] = asyncio.Queue()
        self.done: list[int] = []
        self.dropped = 0  # effects given up after every attempt failed

    def put(self, effect: Effect) -> None:
        self._queue.put_nowait(effect)

    def take_done(self) -> list[int]:
        """The outbox ids handed back since the last call (for the next batch)."""
        done, self.done = self.done, []
        return done

    async def async_run(self) -> None:
        """Perform effects until ``async_close``."""
        while True:
            effect = await self._queue.get()
            if effect is None:
                return
            await self.async_perform(effect)

    async def async_close(self) -> None:
        await self._queue.put(None)

    async def async_perform(self, effect: Effect) -> None:
        pause = self._pause
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await asyncio.wait_for(self._call_channel(effect), timeout=ATTEMPT_TIMEOUT)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "channel effect failed channel=%s kind=%s attempt=%d error=%r",
                    effect.channel.name,
                    effect.kind,
                    attempt,
                    exc,
                )
                if attempt == ATTEMPTS:
                    self.dropped += 1
                    log.error(
                        "channel effect dropped channel=%s kind=%s expert=%s after %d attempts",
                        effect.channel.name,
                        effect.kind,
                        effect.payload.get("expert_id"),
                        ATTEMPTS,
                    )
                    break
                await asyncio.sleep(pause)
                pause *= 4
        if effect.outbox_id is not None:
            self.done.append(effect.outbox_id)
            if len(self.done) == 1:
                self._wake()

    async def _call_channel(self, effect: Effect) -> None:
        p = effect.payload
        if effect.kind == "notice":
            spec = self._expert(p["expert_id"])
            if spec is not None:
                await effect.channel.async_notice(spec, p["message"], int(p.get("count") or 0))
            return
        offer = self._offer(p["offer_id"]) or offer_from_payload(p)
        if effect.kind == "offer":
            await effect.channel.async_offer(offer)
        elif effect.kind == "withdrawn":
            await effect.channel.async_withdrawn(offer, p.get("reason", "ended"))
        elif effect.kind == "accepted":
            await effect.channel.async_accepted(offer)
