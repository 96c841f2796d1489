"""The calls the front is handling, found by their INVITE's server transaction or, once the
expert's phone is called (proxy mode), by their dialog's Call-ID.

A call is forgotten when both its flow is done and its INVITE server transaction is over
(whichever comes last); its dialog is kept a while longer (``DIALOG_LINGER``) so a late BYE
or retransmitted 2xx still finds its way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from expertline.sip import calls
from expertline.sip.call_states import CallState
from expertline.sip.layer import TxEntry, TxKey
from expertline.sip.message import Request, new_tag
from expertline.sip.transport import Peer

DIALOG_LINGER = 32.0  # seconds a finished call's dialog still routes in-dialog requests


@dataclass
class Branch:
    """One attempt to reach an expert's phone (proxy mode)."""

    id: int
    request: Request
    peer: Peer | None = None
    entry: TxEntry | None = None
    provisional: bool = False
    cancel_pending: bool = False
    cancelled: bool = False
    hung_up: bool = False


@dataclass
class Call:
    """One caller's INVITE: its flow, its server transaction, its branches and waits."""

    flow: calls.CallFlow
    invite: Request
    peer: Peer
    entry: TxEntry
    entry_point: str
    to_tag: str = field(default_factory=new_tag)
    branches: dict[int, Branch] = field(default_factory=dict)
    waiter: asyncio.Task[Any] | None = None
    wait_failures: int = 0  # consecutive failed waits (capped exponential backoff)
    timers: dict[calls.CallTimer, asyncio.TimerHandle] = field(default_factory=dict)
    received_at: float = field(default_factory=time.monotonic)  # the INVITE's arrival

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    @property
    def done(self) -> bool:
        return self.flow.state == CallState.DONE

    def stop_timer(self, name: calls.CallTimer) -> None:
        handle = self.timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def stop_all(self) -> None:
        """Stop the call's timers and its wait for the task."""
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.cancel()


# Hands what happened to a call's flow (the front's ``_feed``): the legs report through it.
Feed = Callable[[Call, calls.CallEvent], None]


class CallRegistry:
    def __init__(self) -> None:
        self._calls: dict[TxKey, Call] = {}  # by the INVITE server transaction key
        self._dialogs: dict[str, Call] = {}  # proxy mode: Call-ID -> call

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[Call]:
        return iter(list(self._calls.values()))

    def add(self, call: Call) -> None:
        self._calls[call.entry.key] = call

    def get(self, key: TxKey) -> Call | None:
        return self._calls.get(key)

    def dialog(self, call_id: str) -> Call | None:
        return self._dialogs.get(call_id)

    def add_dialog(self, call: Call) -> None:
        self._dialogs[call.call_id] = call

    def server_done(self, key: TxKey) -> None:
        """The INVITE server transaction ``key`` is over: forget its call if that is done."""
        call = self._calls.get(key)
        if call is not None and call.done:
            del self._calls[key]

    def finished(self, call: Call, server_live: bool) -> None:
        """The call's flow is done: forget it unless its server transaction still runs; its
        dialog lingers ``DIALOG_LINGER`` seconds."""
        if not server_live:
            self._calls.pop(call.entry.key, None)
        if self._dialogs.get(call.call_id) is call:
            asyncio.get_running_loop().call_later(DIALOG_LINGER, self._forget_dialog, call)

    def _forget_dialog(self, call: Call) -> None:
        if self._dialogs.get(call.call_id) is call:
            del self._dialogs[call.call_id]
