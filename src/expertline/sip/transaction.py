"""SIP transactions (RFC 3261 §17, with the Accepted state of RFC 6026): state machines, no I/O.

Each transaction kind is a ``Machine`` of the kit (``expertline.machine``), written below as a
text table like the RFC's figures (``state event new-state action`` per line, read into the
enums at import: a misspelt name fails there) and naming the action each transition runs; an
event with no entry for the current state raises ``IllegalTransition`` (the driver logs and
drops it). Actions
return commands for the driver: ``Transmit`` a message, ``StartTimer``/``StopTimer`` a named
``Timer`` (A, B, D, E, F, G, H, I, J, K, L, M as in the RFCs), ``Deliver`` a message to the
transaction user, ``TimedOut``/``TransportFailed`` to tell it the transaction failed, and
``Terminated`` when the transaction is over. The driver owns the clock and the sockets; when a
timer fires it feeds back the timer's event (``Timer.G.event`` is ``timer_G``).

Events (``TxEvent``): ``request`` (a retransmission of the server transaction's request),
``ack``, ``send_1xx``/``send_2xx``/``send_final`` (the user's response; ``send_final`` is
300-699 for INVITE and 200-699 for the others), ``recv_1xx``/``recv_2xx``/``recv_final`` (a
response on a client transaction), ``timer_<X>`` and ``transport_error``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal

from expertline.machine import Machine
from expertline.sip.message import Headers, Request, Response

SipMessage = Request | Response


class TxState(StrEnum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class TxEvent(StrEnum):
    REQUEST = "request"
    ACK = "ack"
    SEND_1XX = "send_1xx"
    SEND_2XX = "send_2xx"
    SEND_FINAL = "send_final"
    RECV_1XX = "recv_1xx"
    RECV_2XX = "recv_2xx"
    RECV_FINAL = "recv_final"
    TRANSPORT_ERROR = "transport_error"
    TIMER_A = "timer_A"
    TIMER_B = "timer_B"
    TIMER_D = "timer_D"
    TIMER_E = "timer_E"
    TIMER_F = "timer_F"
    TIMER_G = "timer_G"
    TIMER_H = "timer_H"
    TIMER_I = "timer_I"
    TIMER_J = "timer_J"
    TIMER_K = "timer_K"
    TIMER_L = "timer_L"
    TIMER_M = "timer_M"


class Timer(StrEnum):
    """The RFC 3261 §17 timers (L and M from RFC 6026); see docs/sip.md for each one's job."""

    A = "A"
    B = "B"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    H = "H"
    I = "I"  # noqa: E741 - the RFC's name
    J = "J"
    K = "K"
    L = "L"
    M = "M"

    @property
    def event(self) -> TxEvent:
        """The event the driver feeds back when this timer fires."""
        return _TIMER_EVENTS[self]


_TIMER_EVENTS: Mapping[Timer, TxEvent] = {timer: TxEvent(f"timer_{timer}") for timer in Timer}


class TxAction(StrEnum):
    """What a transition does (each transaction class has a handler for each it uses)."""

    ABSORB = "absorb"
    NOTHING = "nothing"
    DELIVER = "deliver"
    TRANSPORT_FAILED = "transport_failed"
    SEND = "send"
    RESEND_LAST = "resend_last"
    SEND_2XX = "send_2xx"
    SEND_FINAL = "send_final"
    RETRANSMIT_FINAL = "retransmit_final"
    CONFIRM = "confirm"
    NO_ACK = "no_ack"
    RETRANSMIT = "retransmit"
    RETRANSMIT_T2 = "retransmit_t2"
    TIMEOUT_B = "timeout_b"
    TIMEOUT_F = "timeout_f"
    FIRST_PROVISIONAL = "first_provisional"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    RESEND_ACK = "resend_ack"


@dataclass(frozen=True, slots=True)
class TimerValues:
    """RFC 3261 §17 base timers; tests shrink them to keep runs short."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0


DEFAULT_TIMERS = TimerValues()

# --- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    message: SipMessage


@dataclass(frozen=True, slots=True)
class StartTimer:
    name: Timer
    delay: float


@dataclass(frozen=True, slots=True)
class StopTimer:
    name: Timer


@dataclass(frozen=True, slots=True)
class Deliver:
    message: SipMessage


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer B/F (no final response) or H (no ACK for our final response)."""

    timer: Timer


@dataclass(frozen=True, slots=True)
class TransportFailed:
    pass


@dataclass(frozen=True, slots=True)
class Terminated:
    pass


Command = Transmit | StartTimer | StopTimer | Deliver | TimedOut | TransportFailed | Terminated

_RESPONSE_EVENTS: Mapping[str, tuple[TxEvent, TxEvent, TxEvent]] = {
    "send": (TxEvent.SEND_1XX, TxEvent.SEND_2XX, TxEvent.SEND_FINAL),
    "recv": (TxEvent.RECV_1XX, TxEvent.RECV_2XX, TxEvent.RECV_FINAL),
}


def response_event(direction: Literal["send", "recv"], status: int, invite: bool) -> TxEvent:
    """Classify a response for the tables: ``<direction>_1xx``, ``_2xx`` or ``_final``."""
    provisional, success, final = _RESPONSE_EVENTS[direction]
    if status < 200:
        return provisional
    if status < 300 and invite:
        return success
    return final


# --- the tables -------------------------------------------------------------------------------


def _machine(kind: str, rows: str) -> Machine[TxState, TxEvent]:
    """A transaction machine from a text table, one transition per line: ``state event new
    state action``, where ``a|b`` in the first two columns stands for each of them. The first
    row's state is the initial one. A name that is no state, event or action fails at import."""
    table: dict[TxState, dict[TxEvent, TxState]] = {}
    actions: dict[tuple[TxState, TxEvent], str] = {}
    for line in rows.strip().splitlines():
        states, events, new_state, action = line.split()
        for state in map(TxState, states.split("|")):
            for event in map(TxEvent, events.split("|")):
                table.setdefault(state, {})[event] = TxState(new_state)
                actions[(state, event)] = TxAction(action)
    table.setdefault(TxState.TERMINATED, {})
    return Machine(kind, table, next(iter(table)), actions)


# RFC 3261 §17.2.1 (figure 7), with RFC 6026's Accepted state for 2xx
SERVER_INVITE = _machine(
    "server INVITE",
    """
    proceeding  request          proceeding  resend_last
    proceeding  send_1xx         proceeding  send
    proceeding  send_2xx         accepted    send_2xx
    proceeding  send_final       completed   send_final
    proceeding  transport_error  terminated  transport_failed
    completed   request          completed   resend_last
    completed   timer_G          completed   retransmit_final
    completed   ack              confirmed   confirm
    completed   timer_H          terminated  no_ack
    completed   transport_error  terminated  transport_failed
    confirmed   request|ack      confirmed   absorb
    confirmed   timer_I          terminated  nothing
    accepted    request          accepted    absorb
    accepted    ack              accepted    deliver
    accepted    send_2xx         accepted    send
    accepted    timer_L          terminated  nothing
    accepted    transport_error  terminated  transport_failed
    """,
)

# RFC 3261 §17.2.2 (figure 8)
SERVER_NON_INVITE = _machine(
    "server non-INVITE",
    """
    trying      request          trying      absorb
    trying      send_1xx         proceeding  send
    trying      send_final       completed   send_final
    trying      transport_error  terminated  transport_failed
    proceeding  request          proceeding  resend_last
    proceeding  send_1xx         proceeding  send
    proceeding  send_final       completed   send_final
    proceeding  transport_error  terminated  transport_failed
    completed   request          completed   resend_last
    completed   timer_J          terminated  nothing
    completed   transport_error  terminated  transport_failed
    """,
)

# RFC 3261 §17.1.1 (figure 5), with RFC 6026's Accepted state (2xx retransmissions go up)
CLIENT_INVITE = _machine(
    "client INVITE",
    """
    calling             timer_A          calling     retransmit
    calling             timer_B          terminated  timeout_b
    calling             recv_1xx         proceeding  first_provisional
    calling|proceeding  recv_2xx         accepted    accepted
    calling|proceeding  recv_final       completed   completed
    calling|proceeding  transport_error  terminated  transport_failed
    proceeding          recv_1xx         proceeding  deliver
    completed           recv_final       completed   resend_ack
    completed           recv_1xx|recv_2xx  completed  absorb
    completed           timer_D          terminated  nothing
    completed           transport_error  terminated  transport_failed
    accepted            recv_2xx         accepted    deliver
    accepted            recv_1xx|recv_final  accepted  absorb
    accepted            timer_M          terminated  nothing
    """,
)

# RFC 3261 §17.1.2 (figure 6)
CLIENT_NON_INVITE = _machine(
    "client non-INVITE",
    """
    trying             timer_E          trying      retransmit
    proceeding         timer_E          proceeding  retransmit_t2
    trying|proceeding  timer_F          terminated  timeout_f
    trying|proceeding  recv_1xx         proceeding  deliver
    trying|proceeding  recv_final       completed   completed
    trying|proceeding  transport_error  terminated  transport_failed
    completed          recv_1xx|recv_final  completed  absorb
    completed          timer_K          terminated  nothing
    """,
)

MACHINES: tuple[Machine[TxState, TxEvent], ...] = (
    SERVER_INVITE,
    SERVER_NON_INVITE,
    CLIENT_INVITE,
    CLIENT_NON_INVITE,
)

# --- the transactions -------------------------------------------------------------------------

Handler = Callable[[Any, SipMessage | None], list[Command]]


class Transaction:
    """One transaction: its machine's state, and the handlers of the machine's actions."""

    MACHINE: ClassVar[Machine[TxState, TxEvent]]
    ACTIONS: ClassVar[Mapping[str, Handler]]

    def __init__(self, request: Request, reliable: bool, timers: TimerValues) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers
        initial = self.MACHINE.initial
        assert isinstance(initial, TxState)  # one initial state per transaction kind
        self.state = initial
        self.last_response: Response | None = None

    @property
    def kind(self) -> str:
        return self.MACHINE.name

    def handle(self, event: TxEvent, message: SipMessage | None = None) -> list[Command]:
        """Run ``event`` through the table; ``IllegalTransition`` when it has no entry."""
        self.state, action = self.MACHINE.step(self.state, event)
        assert action is not None  # every row of the tables names its action
        commands = self.ACTIONS[action](self, message)
        if self.MACHINE.is_final(self.state):
            commands.append(Terminated())
        return commands

    # Actions shared by several tables.

    def _nothing(self, _: object) -> list[Command]:
        return []

    def _deliver(self, message: SipMessage | None) -> list[Command]:
        assert message is not None
        return [Deliver(message)]

    def _transport_failed(self, _: object) -> list[Command]:
        return [TransportFailed()]

    SHARED: ClassVar[Mapping[str, Handler]] = {
        TxAction.ABSORB: _nothing,  # a retransmission swallowed
        TxAction.NOTHING: _nothing,  # a transition without output
        TxAction.DELIVER: _deliver,
        TxAction.TRANSPORT_FAILED: _transport_failed,
    }


class ServerTransaction(Transaction):
    """What both server transactions do with the user's responses."""

    def _send(self, response: SipMessage | None) -> list[Command]:
        assert isinstance(response, Response)
        self.last_response = response
        return [Transmit(response)]

    def _resend_last(self, _: object) -> list[Command]:
        return [Transmit(self.last_response)] if self.last_response is not None else []

    SERVER: ClassVar[Mapping[str, Handler]] = {
        **Transaction.SHARED,
        TxAction.SEND: _send,
        TxAction.RESEND_LAST: _resend_last,
    }


class ServerInvite(ServerTransaction):
    """RFC 3261 §17.2.1 (figure 7) with RFC 6026's Accepted state for 2xx."""

    MACHINE = SERVER_INVITE

    def __init__(self, request: Request, reliable: bool, timers: TimerValues) -> None:
        super().__init__(request, reliable, timers)
        self._g = timers.t1

    def _send_2xx(self, response: SipMessage | None) -> list[Command]:
        return [*self._send(response), StartTimer(Timer.L, 64 * self.timers.t1)]

    def _send_final(self, response: SipMessage | None) -> list[Command]:
        commands = self._send(response)
        if not self.reliable:
            commands.append(StartTimer(Timer.G, self._g))
        commands.append(StartTimer(Timer.H, 64 * self.timers.t1))
        return commands

    def _retransmit_final(self, _: object) -> list[Command]:
        self._g = min(2 * self._g, self.timers.t2)
        return [*self._resend_last(None), StartTimer(Timer.G, self._g)]

    def _confirm(self, _: object) -> list[Command]:
        return [
            StopTimer(Timer.G),
            StopTimer(Timer.H),
            StartTimer(Timer.I, 0.0 if self.reliable else self.timers.t4),
        ]

    def _no_ack(self, _: object) -> list[Command]:
        return [StopTimer(Timer.G), TimedOut(Timer.H)]

    ACTIONS = {
        **ServerTransaction.SERVER,
        TxAction.SEND_2XX: _send_2xx,
        TxAction.SEND_FINAL: _send_final,
        TxAction.RETRANSMIT_FINAL: _retransmit_final,
        TxAction.CONFIRM: _confirm,
        TxAction.NO_ACK: _no_ack,
    }


class ServerNonInvite(ServerTransaction):
    """RFC 3261 §17.2.2 (figure 8)."""

    MACHINE = SERVER_NON_INVITE

    def _send_final(self, response: SipMessage | None) -> list[Command]:
        delay = 0.0 if self.reliable else 64 * self.timers.t1
        return [*self._send(response), StartTimer(Timer.J, delay)]

    ACTIONS = {**ServerTransaction.SERVER, TxAction.SEND_FINAL: _send_final}


class ClientTransaction(Transaction):
    """Both client transactions: the request goes out once, then again on a retransmission
    timer (unreliable transports only) until a response or the timeout timer."""

    RETRANSMIT: ClassVar[Timer]
    TIMEOUT: ClassVar[Timer]

    def __init__(self, request: Request, reliable: bool, timers: TimerValues) -> None:
        super().__init__(request, reliable, timers)
        self._interval = timers.t1

    def start(self) -> list[Command]:
        """Send the request for the first time (the initial transition of figures 5 and 6)."""
        commands: list[Command] = [Transmit(self.request)]
        if not self.reliable:
            commands.append(StartTimer(self.RETRANSMIT, self._interval))
        commands.append(StartTimer(self.TIMEOUT, 64 * self.timers.t1))
        return commands

    def _again(self, interval: float) -> list[Command]:
        self._interval = interval
        return [Transmit(self.request), StartTimer(self.RETRANSMIT, interval)]

    def _timed_out(self, _: object) -> list[Command]:
        return [StopTimer(self.RETRANSMIT), TimedOut(self.TIMEOUT)]

    def _answered(self) -> list[Command]:
        return [StopTimer(self.RETRANSMIT), StopTimer(self.TIMEOUT)]


class ClientInvite(ClientTransaction):
    """RFC 3261 §17.1.1 (figure 5) with RFC 6026's Accepted state (2xx retransmissions go up)."""

    MACHINE = CLIENT_INVITE
    RETRANSMIT = Timer.A
    TIMEOUT = Timer.B

    def __init__(self, request: Request, reliable: bool, timers: TimerValues) -> None:
        super().__init__(request, reliable, timers)
        self._ack: Request | None = None

    def _retransmit(self, _: object) -> list[Command]:
        return self._again(2 * self._interval)

    def _first_provisional(self, message: SipMessage | None) -> list[Command]:
        return [*self._answered(), *self._deliver(message)]

    def _accepted(self, message: SipMessage | None) -> list[Command]:
        return [
            *self._answered(),
            *self._deliver(message),
            StartTimer(Timer.M, 64 * self.timers.t1),
        ]

    def _completed(self, message: SipMessage | None) -> list[Command]:
        assert isinstance(message, Response)
        self._ack = ack_for(self.request, message)
        return [
            *self._answered(),
            Transmit(self._ack),
            *self._deliver(message),
            StartTimer(Timer.D, 0.0 if self.reliable else self.timers.timer_d),
        ]

    def _resend_ack(self, _: object) -> list[Command]:
        return [Transmit(self._ack)] if self._ack is not None else []

    ACTIONS = {
        **Transaction.SHARED,
        TxAction.RETRANSMIT: _retransmit,
        TxAction.TIMEOUT_B: ClientTransaction._timed_out,
        TxAction.FIRST_PROVISIONAL: _first_provisional,
        TxAction.ACCEPTED: _accepted,
        TxAction.COMPLETED: _completed,
        TxAction.RESEND_ACK: _resend_ack,
    }


class ClientNonInvite(ClientTransaction):
    """RFC 3261 §17.1.2 (figure 6)."""

    MACHINE = CLIENT_NON_INVITE
    RETRANSMIT = Timer.E
    TIMEOUT = Timer.F

    def _retransmit(self, _: object) -> list[Command]:
        return self._again(min(2 * self._interval, self.timers.t2))

    def _retransmit_t2(self, _: object) -> list[Command]:
        return self._again(self.timers.t2)

    def _completed(self, message: SipMessage | None) -> list[Command]:
        return [
            *self._answered(),
            *self._deliver(message),
            StartTimer(Timer.K, 0.0 if self.reliable else self.timers.t4),
        ]

    ACTIONS = {
        **Transaction.SHARED,
        TxAction.RETRANSMIT: _retransmit,
        TxAction.RETRANSMIT_T2: _retransmit_t2,
        TxAction.TIMEOUT_F: ClientTransaction._timed_out,
        TxAction.COMPLETED: _completed,
    }


TRANSACTIONS: tuple[type[Transaction], ...] = (
    ServerInvite,
    ServerNonInvite,
    ClientInvite,
    ClientNonInvite,
)


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


def markdown_tables() -> str:
    """The transition tables as Markdown (docs/sip.md embeds this text; a test keeps it equal)."""
    out: list[str] = []
    for machine in MACHINES:
        out.append(f"**{machine.name}**\n")
        out.append("| state | event | next state | action |")
        out.append("|---|---|---|---|")
        for state, row in machine.table.items():
            for event, new_state in row.items():
                action = str(machine.actions[(state, event)]).replace("_", " ")
                out.append(f"| {state} | {event} | {new_state} | {action} |")
        out.append("")
    return "\n".join(out)
