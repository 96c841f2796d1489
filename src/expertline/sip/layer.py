"""The transaction layer: the transport, the live transactions on it, and their timers.

It owns the sockets and the clock of every transaction (``sip.transaction`` holds their tables,
with no I/O): it parses what arrives, answers a request that is not SIP enough with ``400``
(or drops it), lets a server transaction absorb retransmissions and ACKs of its final
response, matches responses to client transactions, and carries out what the tables command
(send, start or stop a named timer, hand a message to the transaction user, report a failure,
forget the transaction). New requests go to the ``on_request`` callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from expertline.machine import IllegalTransition
from expertline.sip import transaction
from expertline.sip.checks import bad_request, unparseable_response
from expertline.sip.message import (
    ParseError,
    Request,
    Response,
    make_response,
    new_tag,
    parse_message,
)
from expertline.sip.transaction import Timer, TimerValues, TxEvent
from expertline.sip.transport import Peer, SipTransport

log = logging.getLogger("expertline.sip")

TxKey = tuple[str, str]  # (Via branch, method): RFC 3261 §17.1.3 / §17.2.3
SipMessage = Request | Response


def _ignore(_: object) -> None:
    return None


@dataclass
class TxEntry:
    """A live transaction with the peer it talks to and what to do with its outputs."""

    tx: transaction.Transaction
    key: TxKey
    peer: Peer
    server: bool
    on_deliver: Callable[[SipMessage], None] = _ignore
    on_failure: Callable[[str], None] = _ignore
    timers: dict[Timer, asyncio.TimerHandle] = field(default_factory=dict)


class TransactionLayer:
    """UDP and TCP on one port, and the transactions running over them."""

    def __init__(
        self,
        on_request: Callable[[Request, Peer], None],
        on_server_done: Callable[[TxKey], None],
        timers: TimerValues,
    ) -> None:
        self.on_request = on_request
        self.on_server_done = on_server_done  # a server transaction was forgotten
        self.timers = timers
        self.transport = SipTransport(self._receive, self._transport_failed)
        self.server_tx: dict[TxKey, TxEntry] = {}
        self.client_tx: dict[TxKey, TxEntry] = {}
        self.stats: dict[str, int] = {}
        self.responses: dict[tuple[str, int], int] = {}  # (sent | received, status) -> count
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    @property
    def host(self) -> str:
        return self.transport.host

    @property
    def port(self) -> int:
        return self.transport.port

    async def async_start(self, host: str, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        await self.transport.async_start(host, port)

    async def async_stop(self) -> None:
        self._stopping = True  # nothing new is taken from now on
        for entry in [*self.server_tx.values(), *self.client_tx.values()]:
            for handle in entry.timers.values():
                handle.cancel()
        await self.transport.async_stop()

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    # --- sending -------------------------------------------------------------------------------

    def send(self, peer: Peer, message: SipMessage) -> None:
        self.count("sent")
        if type(message) is Response:
            key = ("sent", message.status)
            self.responses[key] = self.responses.get(key, 0) + 1
        self.transport.send(peer, message.to_bytes())

    def reply_stateless(
        self,
        request: Request,
        peer: Peer,
        status: int,
        reason: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        response = make_response(request, status, reason, to_tag=new_tag(), extra=extra)
        self.send(peer, response)

    def reject_bad(self, request: Request, peer: Peer, problem: str) -> None:
        """``400`` with the problem as reason (never to an ACK: it gets no response)."""
        self.count("bad")
        log.info("sip rejected bad request peer=%s status=400 reason=%s", peer, problem)
        if request.method != "ACK":
            self.reply_stateless(request, peer, 400, bad_request(problem))

    # --- receiving -----------------------------------------------------------------------------

    def _receive(self, data: bytes, peer: Peer) -> None:
        if self._stopping:
            return
        self.count("received")
        if data.strip(b"\r\n") == b"":
            return  # keep-alive
        try:
            message = parse_message(data, stream=peer.transport == "tcp")
        except ParseError as exc:
            self.count("unparseable")
            self._reject_unparseable(data, peer, str(exc))
            return
        try:
            if isinstance(message, Request):
                self.on_request(message, peer)
            else:
                self._on_response(message)
        except ParseError as exc:  # a header we needed was malformed
            self.count("bad")
            if isinstance(message, Request) and message.method != "ACK":
                self.reply_stateless(message, peer, 400, bad_request(str(exc)))
        except Exception:
            log.exception("sip message handling failed peer=%s", peer)

    def _reject_unparseable(self, data: bytes, peer: Peer, why: str) -> None:
        """Answer 400 when the request line and Via can be read; otherwise drop."""
        response = unparseable_response(data, why)
        if response is None:
            log.info("sip dropped unparseable message peer=%s error=%s", peer, why)
            return
        log.info("sip rejected unparseable request peer=%s status=400 error=%s", peer, why)
        self.send(peer, response)

    def _on_response(self, response: Response) -> None:
        counted = ("received", response.status)
        self.responses[counted] = self.responses.get(counted, 0) + 1
        key = (response.top_via.branch or "", response.cseq.method)
        entry = self.client_tx.get(key)
        if entry is None:
            log.debug("sip response without transaction status=%d key=%s", response.status, key)
            return
        event = transaction.response_event(
            "recv", response.status, isinstance(entry.tx, transaction.ClientInvite)
        )
        self._event(entry, event, response)

    def _transport_failed(self, peer: Peer) -> None:
        for entry in list(self.client_tx.values()):
            if entry.peer == peer:
                self._event(entry, TxEvent.TRANSPORT_ERROR)

    # --- transactions --------------------------------------------------------------------------

    def absorb(self, key: TxKey, request: Request) -> bool:
        """A retransmission (or the ACK of a final response) of a request whose server
        transaction is live: the transaction answers it, and True."""
        entry = self.server_tx.get(key)
        if entry is None:
            return False
        event = TxEvent.ACK if request.method == "ACK" else TxEvent.REQUEST
        self._event(entry, event, request)
        return True

    def server(self, request: Request, peer: Peer, key: TxKey) -> TxEntry:
        """A new server transaction for ``request`` (INVITE or not)."""
        cls = (
            transaction.ServerInvite if request.method == "INVITE" else transaction.ServerNonInvite
        )
        entry = TxEntry(cls(request, peer.transport != "udp", self.timers), key, peer, True)
        self.server_tx[key] = entry
        return entry

    def respond(self, entry: TxEntry, response: Response) -> None:
        """Send the transaction user's response through its server transaction."""
        event = transaction.response_event(
            "send", response.status, isinstance(entry.tx, transaction.ServerInvite)
        )
        self._event(entry, event, response)

    def client(
        self,
        request: Request,
        peer: Peer,
        on_deliver: Callable[[SipMessage], None] = _ignore,
        on_failure: Callable[[str], None] = _ignore,
    ) -> TxEntry:
        """Send ``request`` through a new client transaction; responses go to ``on_deliver``,
        a timeout or transport failure to ``on_failure``."""
        key = (request.top_via.branch or "", request.method)
        cls = (
            transaction.ClientInvite if request.method == "INVITE" else transaction.ClientNonInvite
        )
        created = cls(request, peer.transport != "udp", self.timers)
        entry = TxEntry(created, key, peer, False, on_deliver, on_failure)
        self.client_tx[key] = entry
        self._run(entry, created.start())
        return entry

    def _event(self, entry: TxEntry, event: TxEvent, message: SipMessage | None = None) -> None:
        try:
            commands = entry.tx.handle(event, message)
        except IllegalTransition as exc:
            log.debug("sip transaction event ignored key=%s error=%s", entry.key, exc)
            return
        self._run(entry, commands)

    def _timer(self, entry: TxEntry, timer: Timer) -> None:
        entry.timers.pop(timer, None)
        self._event(entry, timer.event)

    def _run(self, entry: TxEntry, commands: list[transaction.Command]) -> None:
        # isinstance, not match: this runs for every message, and class patterns cost more.
        for command in commands:
            if isinstance(command, transaction.Transmit):
                self.send(entry.peer, command.message)
            elif isinstance(command, transaction.StartTimer):
                self._stop_timer(entry, command.name)
                assert self._loop is not None
                entry.timers[command.name] = self._loop.call_later(
                    command.delay, self._timer, entry, command.name
                )
            elif isinstance(command, transaction.StopTimer):
                self._stop_timer(entry, command.name)
            elif isinstance(command, transaction.Deliver):
                entry.on_deliver(command.message)
            elif isinstance(command, transaction.TimedOut):
                entry.on_failure(f"timer {command.timer}")
            elif isinstance(command, transaction.TransportFailed):
                entry.on_failure("transport")
            elif isinstance(command, transaction.Terminated):
                self._forget(entry)

    def _stop_timer(self, entry: TxEntry, timer: Timer) -> None:
        handle = entry.timers.pop(timer, None)
        if handle is not None:
            handle.cancel()

    def _forget(self, entry: TxEntry) -> None:
        for handle in entry.timers.values():
            handle.cancel()
        entry.timers.clear()
        table = self.server_tx if entry.server else self.client_tx
        if table.get(entry.key) is entry:
            del table[entry.key]
        if entry.server:
            self.on_server_done(entry.key)
