"""SIP transactions (RFC 3261 §17, with the Accepted state of RFC 6026): state machines, no I/O.

Each transaction is a transition table ``(state, event) -> (new state, action)``; an event with
no entry for the current state raises ``InvalidTransition`` (the caller logs and drops it).
Actions return commands for the driver: ``Transmit`` a message, ``StartTimer``/``StopTimer`` a
*named* timer (A, B, D, E, F, G, H, I, J, K, L, M as in the RFC), ``Deliver`` a message to the
transaction user, ``TimedOut``/``TransportFailed`` to tell it the transaction failed, and
``Terminated`` when the transaction is over. The driver owns the clock and the sockets.

Events: ``request`` (a retransmission of the server transaction's request), ``ack``,
``send_1xx``/``send_2xx``/``send_final`` (the user's response; ``send_final`` is 300-699 for
INVITE and 200-699 for the others), ``recv_1xx``/``recv_2xx``/``recv_final`` (a response on a
client transaction), ``timer_<X>`` and ``transport_error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from expertline.sip.message import Headers, Request, Response


@dataclass(frozen=True, slots=True)
class TimerValues:
    """RFC 3261 §17 base timers; tests shrink them to keep runs short."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0


DEFAULT_TIMERS = TimerValues()


@dataclass(frozen=True, slots=True)
class Transmit:
    message: Request | Response


@dataclass(frozen=True, slots=True)
class StartTimer:
    name: str
    delay: float


@dataclass(frozen=True, slots=True)
class StopTimer:
    name: str


@dataclass(frozen=True, slots=True)
class Deliver:
    message: Request | Response


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer B/F (no final response) or H (no ACK for our final response)."""

    timer: str


@dataclass(frozen=True, slots=True)
class TransportFailed:
    pass


@dataclass(frozen=True, slots=True)
class Terminated:
    pass


Command = Transmit | StartTimer | StopTimer | Deliver | TimedOut | TransportFailed | Terminated


class InvalidTransition(Exception):
    def __init__(self, kind: str, state: str, event: str) -> None:
        super().__init__(f"{kind}: no transition for event {event!r} in state {state!r}")
        self.state = state
        self.event = event


def response_event(prefix: str, status: int, invite: bool) -> str:
    """Classify a response for the tables: ``<prefix>_1xx``, ``_2xx`` or ``_final``."""
    if status < 200:
        return f"{prefix}_1xx"
    if status < 300 and invite:
        return f"{prefix}_2xx"
    return f"{prefix}_final"


class Transaction:
    """Common driver of the tables. Subclasses name their states, table and actions."""

    KIND: ClassVar[str]
    INITIAL: ClassVar[str]
    TABLE: ClassVar[dict[tuple[str, str], tuple[str, str]]]

    def __init__(self, request: Request, reliable: bool, timers: TimerValues) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers
        self.state = self.INITIAL
        self.last_response: Response | None = None

    def handle(self, event: str, message: Request | Response | None = None) -> list[Command]:
        try:
            new_state, action = self.TABLE[(self.state, event)]
        except KeyError:
            raise InvalidTransition(self.KIND, self.state, event) from None
        self.state = new_state
        commands: list[Command] = getattr(self, f"_{action}")(message)
        if new_state == "terminated":
            commands.append(Terminated())
        return commands

    # Actions shared by several tables.

    def _absorb(self, _: object) -> list[Command]:
        return []

    def _deliver(self, message: Request | Response | None) -> list[Command]:
        assert message is not None
        return [Deliver(message)]

    def _transport_failed(self, _: object) -> list[Command]:
        return [TransportFailed()]

    def _nothing(self, _: object) -> list[Command]:
        return []


def _table(
    rows: list[tuple[str | tuple[str, ...], str, str, str]],
) -> dict[tuple[str, str], tuple[str, str]]:
    table: dict[tuple[str, str], tuple[str, str]] = {}
    for states, event, new_state, action in rows:
        for state in (states,) if isinstance(states, str) else states:
            table[(state, event)] = (new_state, action)
    return table


class ServerInvite(Transaction):
    """RFC 3261 §17.2.1 (figure 7) with RFC 6026's Accepted state for 2xx."""

    KIND = "server INVITE"
    INITIAL = "proceeding"
    TABLE = _table(
        [
            ("proceeding", "request", "proceeding", "resend_last"),
            ("proceeding", "send_1xx", "proceeding", "send"),
            ("proceeding", "send_2xx", "accepted", "send_2xx"),
            ("proceeding", "send_final", "completed", "send_final"),
            ("completed", "request", "completed", "resend_last"),
            ("completed", "timer_G", "completed", "retransmit_final"),
            ("completed", "ack", "confirmed", "confirm"),
            ("completed", "timer_H", "terminated", "no_ack"),
            ("confirmed", "request", "confirmed", "absorb"),
            ("confirmed", "ack", "confirmed", "absorb"),
            ("confirmed", "timer_I", "terminated", "nothing"),
            ("accepted", "request", "accepted", "absorb"),
            ("accepted", "ack", "accepted", "deliver"),
            ("accepted", "send_2xx", "accepted", "send"),
            ("accepted", "timer_L", "terminated", "nothing"),
            (
                ("proceeding", "completed", "accepted"),
                "transport_error",
                "terminated",
                "transport_failed",
            ),
        ]
    )

    def __init__(self, request: Request, reliable: bool, timers: TimerValues) -> None:
        super().__init__(request, reliable, timers)
        self._g = timers.t1

    def _send(self, response: Request | Response | None) -> list[Command]:
        assert isinstance(response, Response)
        self.last_response = response
        return [Transmit(response)]

    def _resend_last(self, _: object) -> list[Command]:
        return [Transmit(self.last_response)] if self.last_response is not None else []

    def _send_2xx(self, response: Request | Response | None) -> list[Command]:
        return [*self._send(response), StartTimer("L", 64 * self.timers.t1)]

    def _send_final(self, response: Request | Response | None) -> list[Command]:
        commands = self._send(response)
        if not self.reliable:
            commands.append(StartTimer("G", self._g))
        commands.append(StartTimer("H", 64 * self.timers.t1))
        return commands

    def _retransmit_final(self, _: object) -> list[Command]:
        self._g = min(2 * self._g, self.timers.t2)
        return [*self._resend_last(None), StartTimer("G", self._g)]

    def _confirm(self, _: object) -> list[Command]:
        return [
            StopTimer("G"),
            StopTimer("H"),
            StartTimer("I", 0.0 if self.reliable else self.timers.t4),
        ]

    def _no_ack(self, _: object) -> list[Command]:
        return [StopTimer("G"), TimedOut("H")]


class ServerNonInvite(Transaction):
    """RFC 3261 §17.2.2 (figure 8)."""

    KIND = "server non-INVITE"
    INITIAL = "trying"
    TABLE = _table(
        [
            ("trying", "request", "trying", "absorb"),
            ("trying", "send_1xx", "proceeding", "send"),
            ("trying", "send_final", "completed", "send_final"),
            ("proceeding", "request", "proceeding", "resend_last"),
            ("proceeding", "send_1xx", "proceeding", "send"),
            ("proceeding", "send_final", "completed", "send_final"),
            ("completed", "request", "completed", "resend_last"),
            ("completed", "timer_J", "terminated", "nothing"),
            (
                ("trying", "proceeding", "completed"),
                "transport_error",
                "terminated",
                "transport_failed",
            ),
        ]
    )

    def _send(self, response: Request | Response | None) -> list[Command]:
        assert isinstance(response, Response)
        self.last_response = response
        return [Transmit(response)]

    def _resend_last(self, _: object) -> list[Command]:
        return [Transmit(self.last_response)] if self.last_response is not None else []

    def _send_final(self, response: Request | Response | None) -> list[Command]:
        delay = 0.0 if self.reliable else 64 * self.timers.t1
        return [*self._send(response), StartTimer("J", delay)]


class ClientInvite(Transaction):
    """RFC 3261 §17.1.1 (figure 5) with RFC 6026's Accepted state (2xx retransmissions go up)."""

    KIND = "client INVITE"
    INITIAL = "calling"
    TABLE = _table(
        [
            ("calling", "timer_A", "calling", "retransmit"),
            ("calling", "timer_B", "terminated", "timeout_b"),
            ("calling", "recv_1xx", "proceeding", "first_provisional"),
            (("calling", "proceeding"), "recv_2xx", "accepted", "accepted"),
            (("calling", "proceeding"), "recv_final", "completed", "completed"),
            ("proceeding", "recv_1xx", "proceeding", "deliver"),
            ("completed", "recv_final", "completed", "resend_ack"),
            ("completed", "recv_1xx", "completed", "absorb"),
            ("completed", "recv_2xx", "completed", "absorb"),
            ("completed", "timer_D", "terminated", "nothing"),
            ("accepted", "recv_2xx", "accepted", "deliver"),
            ("accepted", "recv_1xx", "accepted", "absorb"),
            ("accepted", "recv_final", "accepted", "absorb"),
            ("accepted", "timer_M", "terminated", "nothing"),
            (
                ("calling", "proceeding", "completed"),
                "transport_error",
                "terminated",
                "transport_failed",
            ),
        ]
    )

    def __init__(self, request: Request, reliable: bool, timers: TimerValues) -> None:
        super().__init__(request, reliable, timers)
        self._a = timers.t1
        self._ack: Request | None = None

    def start(self) -> list[Command]:
        """Send the request for the first time (the initial Calling transition)."""
        commands: list[Command] = [Transmit(self.request)]
        if not self.reliable:
            commands.append(StartTimer("A", self._a))
        commands.append(StartTimer("B", 64 * self.timers.t1))
        return commands

    def _retransmit(self, _: object) -> list[Command]:
        self._a *= 2
        return [Transmit(self.request), StartTimer("A", self._a)]

    def _timeout_b(self, _: object) -> list[Command]:
        return [StopTimer("A"), TimedOut("B")]

    def _first_provisional(self, message: Request | Response | None) -> list[Command]:
        return [StopTimer("A"), StopTimer("B"), *self._deliver(message)]

    def _accepted(self, message: Request | Response | None) -> list[Command]:
        return [
            StopTimer("A"),
            StopTimer("B"),
            *self._deliver(message),
            StartTimer("M", 64 * self.timers.t1),
        ]

    def _completed(self, message: Request | Response | None) -> list[Command]:
        assert isinstance(message, Response)
        self._ack = ack_for(self.request, message)
        return [
            StopTimer("A"),
            StopTimer("B"),
            Transmit(self._ack),
            *self._deliver(message),
            StartTimer("D", 0.0 if self.reliable else self.timers.timer_d),
        ]

    def _resend_ack(self, _: object) -> list[Command]:
        return [Transmit(self._ack)] if self._ack is not None else []


class ClientNonInvite(Transaction):
    """RFC 3261 §17.1.2 (figure 6)."""

    KIND = "client non-INVITE"
    INITIAL = "trying"
    TABLE = _table(
        [
            ("trying", "timer_E", "trying", "retransmit"),
            ("proceeding", "timer_E", "proceeding", "retransmit_t2"),
            (("trying", "proceeding"), "timer_F", "terminated", "timeout_f"),
            (("trying", "proceeding"), "recv_1xx", "proceeding", "deliver"),
            (("trying", "proceeding"), "recv_final", "completed", "completed"),
            ("completed", "recv_1xx", "completed", "absorb"),
            ("completed", "recv_final", "completed", "absorb"),
            ("completed", "timer_K", "terminated", "nothing"),
            (("trying", "proceeding"), "transport_error", "terminated", "transport_failed"),
        ]
    )

    def __init__(self, request: Request, reliable: bool, timers: TimerValues) -> None:
        super().__init__(request, reliable, timers)
        self._e = timers.t1

    def start(self) -> list[Command]:
        commands: list[Command] = [Transmit(self.request)]
        if not self.reliable:
            commands.append(StartTimer("E", self._e))
        commands.append(StartTimer("F", 64 * self.timers.t1))
        return commands

    def _retransmit(self, _: object) -> list[Command]:
        self._e = min(2 * self._e, self.timers.t2)
        return [Transmit(self.request), StartTimer("E", self._e)]

    def _retransmit_t2(self, _: object) -> list[Command]:
        self._e = self.timers.t2
        return [Transmit(self.request), StartTimer("E", self._e)]

    def _timeout_f(self, _: object) -> list[Command]:
        return [StopTimer("E"), TimedOut("F")]

    def _completed(self, message: Request | Response | None) -> list[Command]:
        return [
            StopTimer("E"),
            StopTimer("F"),
            *self._deliver(message),
            StartTimer("K", 0.0 if self.reliable else self.timers.t4),
        ]


def ack_for(request: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a non-2xx final (RFC 3261 §17.1.1.3)."""
    headers = Headers()
    top_via = request.headers.get("Via")
    if top_via is not None:
        headers.add("Via", top_via)
    for name in ("Max-Forwards", "From"):
        value = request.headers.get(name)
        if value is not None:
            headers.add(name, value)
    to = response.headers.get("To")
    if to is not None:
        headers.add("To", to)
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", f"{request.cseq.seq} ACK")
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    return Request(headers, b"", "ACK", request.uri)


ALL_TABLES: dict[str, dict[tuple[str, str], tuple[str, str]]] = {
    cls.KIND: cls.TABLE for cls in (ServerInvite, ServerNonInvite, ClientInvite, ClientNonInvite)
}


def markdown_tables() -> str:
    """The transition tables as Markdown (docs/sip.md embeds this text; a test keeps it equal)."""
    out: list[str] = []
    for kind, table in ALL_TABLES.items():
        out.append(f"**{kind}**\n")
        out.append("| state | event | next state | action |")
        out.append("|---|---|---|---|")
        for (state, event), (new_state, action) in table.items():
            out.append(f"| {state} | {event} | {new_state} | {action.replace('_', ' ')} |")
        out.append("")
    return "\n".join(out)
