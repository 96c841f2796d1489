"""The open batch: the core's commands become its rows and post-commit effects.

Every event the writer runs through the core returns commands; feed rows, records (RCD, TCD),
timers and the channel effects (each with its durable outbox row) are taken from them here.
Closing the batch adds the state of everything the core marked dirty (``projection``) and
numbers it; the pipeline commits it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from expertline.routing import commands as cmd
from expertline.routing.commands import CancelTimer, Emit, SetTimer, WriteRecord
from expertline.routing.model import RoutingConfig
from expertline.routing.timers import TimerKey
from expertline.runtime import projection, store
from expertline.runtime.core_adapter import CoreAdapter
from expertline.runtime.effects import Effect, EffectDelivery
from expertline.runtime.pipeline import Pending
from expertline.runtime.ports import ExpertChannel
from expertline.runtime.projection import Projector

log = logging.getLogger("expertline.runtime")

# Channel commands: each becomes an outbox row and an effect after the commit.
_CHANNEL_EFFECTS = frozenset(projection.EFFECT_KINDS)


class OpenBatch:
    """``set_timer``/``cancel_timer``: the runtime's timers; ``fence``: the lease token the
    commit must still hold."""

    def __init__(
        self,
        *,
        node: str,
        config: Callable[[], RoutingConfig],
        channels: list[ExpertChannel],
        meta: dict[str, dict[str, Any]],
        effects: EffectDelivery,
        projector: Projector,
        set_timer: Callable[[TimerKey, float], None],
        cancel_timer: Callable[[TimerKey], None],
        fence: Callable[[], int | None],
    ) -> None:
        self.node = node
        self._config = config
        self._channels = channels
        self._meta = meta
        self._effects = effects
        self._projector = projector
        self._set_timer = set_timer
        self._cancel_timer = cancel_timer
        self._fence = fence
        self.seq = store.Sequences()
        self.pending = Pending()
        self.closed = 0  # batches closed

    def discard(self) -> None:
        """Forget what the open batch holds (a rewind or a failed recovery)."""
        self.pending = Pending()

    def absorb(self, commands: list[cmd.Command], now: float) -> None:
        """Turn the core's commands into rows of the open batch and post-commit effects.

        Every event's commands pass here (about twenty a call lifecycle): the types are told
        apart by identity, most frequent first, and the callables are bound once."""
        feed = self.pending.batch.feed
        seq = self.seq
        version = self._config().version
        row, node = projection.feed_row, self.node
        set_timer, cancel_timer = self._set_timer, self._cancel_timer
        for c in commands:
            if type(c) is Emit:
                seq.feed += 1
                feed.append(row(c, seq.feed, node, version, now))
            elif type(c) is SetTimer:
                set_timer(c.key, c.at)
            elif type(c) is CancelTimer:
                cancel_timer(c.key)
            elif type(c) is WriteRecord:
                self._record(c, now)
            elif type(c) in _CHANNEL_EFFECTS:
                self._channel_effect(c, now)
            # ReturnLabel: the label is part of the task's state (view, webhook, RCD record);
            # AnswerRefused: returned to whoever answered.

    def _record(self, c: cmd.WriteRecord, now: float) -> None:
        data = projection.jsonable(c.data)
        batch = self.pending.batch
        if c.kind == "attempt":
            batch.feed.append(
                {
                    "id": self.seq.take("feed"),
                    "type": "task.attempt",
                    "task_id": data.get("task_id"),
                    "expert_id": data.get("expert_id"),
                    "data": data,
                    "created_at": now,
                }
            )
            return
        row = projection.record_row(c.kind, data, self.seq.take(c.kind), self.node, now)
        if c.kind == "rcd":
            batch.rcd.append(row)
        else:
            disposition = row["call_disposition"]
            self._meta.setdefault(row["task_id"], {})["call_disposition"] = disposition
            batch.tcd.append(row)

    def _channel_effect(self, c: cmd.Command, at: float) -> None:
        expert_id = getattr(c, "expert_id", None)
        spec = self._config().experts.get(expert_id) if expert_id else None
        if spec is None or not self._channels:
            return
        kind, payload = projection.effect_payload(c)
        for channel in self._channels:
            try:
                reaches = channel.reaches(spec)
            except Exception:  # a broken channel must not stop routing
                log.exception("channel reaches() failed channel=%s", channel.name)
                continue
            if not reaches:
                continue
            outbox_id = self.seq.take("outbox")
            self.pending.batch.outbox.append(
                {
                    "id": outbox_id,
                    "channel": channel.name,
                    "kind": kind,
                    "expert_id": spec.id,
                    "payload": payload,
                    "created_at": at,
                }
            )
            self.pending.effects.append(Effect(channel, kind, payload, outbox_id))

    def close(self, core: CoreAdapter, now: float, config: tuple[RoutingConfig, Any]) -> Pending:
        """Close the open batch: add the state of everything the core marked dirty."""
        pending, self.pending = self.pending, Pending()
        batch = pending.batch
        self._projector.close(core, core.drain_dirty(), batch, pending.views, now)
        done = self._effects.take_done()
        if done:
            batch.outbox_done = done
        if not batch.empty():
            batch.seq = self.seq.take("batch")
            batch.fence = self._fence()
        self.closed += 1
        pending.order = self.closed
        pending.config = config
        return pending
