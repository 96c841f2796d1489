"""The SIP front: wires transport, transactions, call flows and the runtime's ``TaskPort``.

Requests addressed to an entry point become calls (``calls.CallFlow``); in-dialog requests that
carry our Record-Route are proxied on (ACK statelessly, the rest statefully); responses are
matched to our client transactions. Everything the network sends is validated first: a bad
request gets a 4xx and changes nothing; bytes that are not SIP at all are dropped.

Decisions are logged one per line, ``sip <what> key=value ...``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from expertline.errors import ExpertlineError, Forbidden, InvalidInput, NotFound
from expertline.health import Health
from expertline.machine import IllegalTransition
from expertline.runtime.ports import TaskEventType, TaskPort, TaskView
from expertline.settings import SipMode, parse_host_port
from expertline.sip import calls
from expertline.sip.message import (
    SINGLE_VALUED,
    SIP_VERSION,
    CSeq,
    Headers,
    NameAddr,
    ParseError,
    Request,
    Response,
    SipUri,
    Via,
    canonical_name,
    is_digits,
    make_response,
    new_branch,
    new_tag,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from expertline.sip.task_request import RoutingRequest, build_task_request, uri_number
from expertline.sip.transaction import (
    DEFAULT_TIMERS,
    ClientInvite,
    ClientNonInvite,
    Deliver,
    ServerInvite,
    ServerNonInvite,
    StartTimer,
    StopTimer,
    Terminated,
    TimedOut,
    Timer,
    TimerValues,
    Transaction,
    Transmit,
    TransportFailed,
    TxEvent,
    TxState,
    response_event,
)
from expertline.sip.transport import Peer, SipTransport, TransportName
from expertline.sip.trust import AttachPolicy, OutboundTargets, attach_policy, target_host

log = logging.getLogger("expertline.sip")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
# Methods defined by RFCs that we understand but do not serve (405); anything else is 501.
KNOWN_METHODS = frozenset(
    {"REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "INFO", "PRACK", "UPDATE", "REFER", "PUBLISH"}
)
SUPPORTED_OPTIONS: frozenset[str] = frozenset()
REASON_MAX = 200  # characters of a reason phrase that says what was wrong with a request
WAIT_SLICE = 30.0  # seconds per long-poll of the task's status (re-armed until it changes)
PORT_TIMEOUT = 30.0  # bound on any one call into the runtime


@dataclass
class _TxEntry:
    """A live transaction with the peer it talks to and what to do with its outputs."""

    tx: Transaction
    key: tuple[str, str]
    peer: Peer
    server: bool
    on_deliver: Callable[[Request | Response], None] = lambda m: None
    on_failure: Callable[[str], None] = lambda why: None
    timers: dict[Timer, asyncio.TimerHandle] = field(default_factory=dict)


@dataclass
class _Branch:
    """One attempt to reach an expert's phone (proxy mode)."""

    id: int
    request: Request
    peer: Peer | None = None
    entry: _TxEntry | None = None
    provisional: bool = False
    cancel_pending: bool = False
    cancelled: bool = False
    hung_up: bool = False


@dataclass
class _Call:
    flow: calls.CallFlow
    invite: Request
    peer: Peer
    entry: _TxEntry
    entry_point: str
    to_tag: str = field(default_factory=new_tag)
    branches: dict[int, _Branch] = field(default_factory=dict)
    waiter: asyncio.Task[Any] | None = None
    wait_failures: int = 0  # consecutive failed waits (capped exponential backoff)
    timers: dict[calls.CallTimer, asyncio.TimerHandle] = field(default_factory=dict)

    @property
    def call_id(self) -> str:
        return self.invite.call_id


class SipFront:
    """Listens for SIP on UDP and TCP and turns INVITEs to entry points into routed calls."""

    def __init__(
        self,
        port: TaskPort,
        host: str,
        sip_port: int,
        mode: SipMode = "redirect",
        mode_for: Callable[[str], SipMode | None] | None = None,
        timers: TimerValues = DEFAULT_TIMERS,
        wait_slice: float = WAIT_SLICE,
        active: Callable[[], bool] | None = None,
        health: Health | None = None,
        attach: AttachPolicy | None = None,
        targets: OutboundTargets | None = None,
    ) -> None:
        self.port = port
        # Who may join a call to an existing task (default: nobody), and where calls may go.
        self.attach = attach or AttachPolicy()
        self.targets = targets or OutboundTargets(config=lambda: port.config)
        # Is this the node that takes calls (HA: the active one)? Standby answers 503.
        self.active = active or (lambda: True)
        self.health = health
        self.mode = mode
        # An entry point's own sip_mode, from the routing configuration the runtime holds.
        self.mode_for = mode_for or (lambda number: port.config.sip_modes.get(number))
        self.timers = timers
        self.wait_slice = wait_slice
        self.transport = SipTransport(self._receive, self._transport_failed)
        self._bind = (host, sip_port)
        self._server_tx: dict[tuple[str, str], _TxEntry] = {}
        self._client_tx: dict[tuple[str, str], _TxEntry] = {}
        self._calls: dict[tuple[str, str], _Call] = {}  # by the INVITE server transaction key
        self._dialogs: dict[str, _Call] = {}  # proxy mode: Call-ID -> call
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats: dict[str, int] = {}
        self._stopping = False

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.transport.host

    @property
    def sip_port(self) -> int:
        return self.transport.port

    async def async_start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.transport.async_start(*self._bind)
        if self.health is not None:
            self.health.report("sip", True, f"udp,tcp {self.host}:{self.sip_port} {self.mode}")
        log.info(
            "sip listening host=%s port=%d transports=udp,tcp mode=%s",
            self.host,
            self.sip_port,
            self.mode,
        )

    async def async_stop(self) -> None:
        self._stopping = True  # nothing new is taken from now on
        if self.health is not None:
            self.health.report("sip", False, "stopped")
        for task in list(self._tasks):
            task.cancel()
        for entry in list(self._server_tx.values()) + list(self._client_tx.values()):
            for handle in entry.timers.values():
                handle.cancel()
        for call in list(self._calls.values()):
            for handle in call.timers.values():
                handle.cancel()
        await self.transport.async_stop()
        log.info("sip stopped calls_in_progress=%d", len(self._calls))

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- transport ------------------------------------------------------------------------------

    def _send(self, peer: Peer, message: Request | Response) -> None:
        self._count("sent")
        self.transport.send(peer, message.to_bytes())

    def _transport_failed(self, peer: Peer) -> None:
        for entry in list(self._client_tx.values()):
            if entry.peer == peer:
                self._tx_event(entry, TxEvent.TRANSPORT_ERROR)

    def _receive(self, data: bytes, peer: Peer) -> None:
        if self._stopping:
            return
        self._count("received")
        if data.strip(b"\r\n") == b"":
            return  # keep-alive
        try:
            message = parse_message(data, stream=peer.transport == "tcp")
        except ParseError as exc:
            self._count("unparseable")
            self._reject_unparseable(data, peer, str(exc))
            return
        try:
            if isinstance(message, Request):
                self._on_request(message, peer)
            else:
                self._on_response(message, peer)
        except ParseError as exc:  # a header we needed was malformed
            self._count("bad")
            if isinstance(message, Request) and message.method != "ACK":
                self._reply_stateless(message, peer, 400, f"Bad Request ({exc})"[:REASON_MAX])
        except Exception:
            log.exception("sip message handling failed peer=%s", peer)

    def _reject_unparseable(self, data: bytes, peer: Peer, why: str) -> None:
        """Answer 400 when the request line and Via can be read; otherwise drop."""
        head = data.split(b"\r\n\r\n", 1)[0]
        try:
            lines = head.decode("utf-8", "replace").split("\r\n")
        except Exception:
            lines = []
        if not lines or lines[0].startswith("SIP/") or " ACK " in f" {lines[0]} ":
            log.info("sip dropped unparseable message peer=%s error=%s", peer, why)
            return
        wanted = {"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"}
        h = Headers()
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            name = name.strip()
            if not colon or name.lower() not in wanted:
                continue
            # A duplicated Call-ID/From/To/CSeq may be why it is refused: echo the first.
            if canonical_name(name) not in SINGLE_VALUED or not h.has(name):
                h.add(name, value.strip())
        try:
            via = h.get("Via")
            if via is None:
                raise ParseError("no Via")
            parse_via(via)
            request = Request(h, b"", "INVITE", "sip:invalid")
            reason = f"Bad Request ({why})"[:REASON_MAX]
            response = make_response(request, 400, reason, to_tag=new_tag())
        except (ParseError, ValueError):
            log.info("sip dropped unparseable message peer=%s error=%s", peer, why)
            return
        log.info("sip rejected unparseable request peer=%s status=400 error=%s", peer, why)
        self._send(peer, response)

    def _reply_stateless(
        self,
        request: Request,
        peer: Peer,
        status: int,
        reason: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        response = make_response(request, status, reason, to_tag=new_tag(), extra=extra)
        self._send(peer, response)

    # --- transactions ---------------------------------------------------------------------------

    def _reliable(self, peer: Peer) -> bool:
        return peer.transport != "udp"

    def _run_tx(self, entry: _TxEntry, commands: list[Any]) -> None:
        loop = self._loop
        assert loop is not None
        for command in commands:
            if isinstance(command, Transmit):
                self._send(entry.peer, command.message)
            elif isinstance(command, StartTimer):
                old = entry.timers.pop(command.name, None)
                if old is not None:
                    old.cancel()
                entry.timers[command.name] = loop.call_later(
                    command.delay, self._tx_timer, entry, command.name
                )
            elif isinstance(command, StopTimer):
                handle = entry.timers.pop(command.name, None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(command, Deliver):
                entry.on_deliver(command.message)
            elif isinstance(command, TimedOut):
                entry.on_failure(f"timer {command.timer}")
            elif isinstance(command, TransportFailed):
                entry.on_failure("transport")
            elif isinstance(command, Terminated):
                for handle in entry.timers.values():
                    handle.cancel()
                entry.timers.clear()
                table = self._server_tx if entry.server else self._client_tx
                if table.get(entry.key) is entry:
                    del table[entry.key]
                if entry.server:
                    call = self._calls.get(entry.key)
                    if call is not None and call.flow.state == calls.CallState.DONE:
                        del self._calls[entry.key]

    def _tx_timer(self, entry: _TxEntry, timer: Timer) -> None:
        entry.timers.pop(timer, None)
        self._tx_event(entry, timer.event)

    def _tx_event(
        self, entry: _TxEntry, event: TxEvent, message: Request | Response | None = None
    ) -> None:
        try:
            commands = entry.tx.handle(event, message)
        except IllegalTransition as exc:
            log.debug("sip transaction event ignored key=%s error=%s", entry.key, exc)
            return
        self._run_tx(entry, commands)

    def _server_respond(self, entry: _TxEntry, response: Response) -> None:
        event = response_event("send", response.status, isinstance(entry.tx, ServerInvite))
        self._tx_event(entry, event, response)

    def _new_server_tx(self, request: Request, peer: Peer, key: tuple[str, str]) -> _TxEntry:
        cls = ServerInvite if request.method == "INVITE" else ServerNonInvite
        entry = _TxEntry(cls(request, self._reliable(peer), self.timers), key, peer, True)
        self._server_tx[key] = entry
        return entry

    def _new_client_tx(
        self,
        request: Request,
        peer: Peer,
        on_deliver: Callable[[Request | Response], None],
        on_failure: Callable[[str], None],
    ) -> _TxEntry:
        branch = request.top_via.branch or ""
        key = (branch, request.method)
        cls = ClientInvite if request.method == "INVITE" else ClientNonInvite
        tx = cls(request, self._reliable(peer), self.timers)
        entry = _TxEntry(tx, key, peer, False, on_deliver, on_failure)
        self._client_tx[key] = entry
        self._run_tx(entry, tx.start())
        return entry

    # --- requests -------------------------------------------------------------------------------

    def _on_request(self, request: Request, peer: Peer) -> None:
        if request.version != SIP_VERSION:
            if request.method != "ACK":
                self._reply_stateless(request, peer, 505)
            return
        via_text = request.headers.get("Via")
        if via_text is None:
            log.info("sip dropped request without Via peer=%s", peer)
            return
        try:
            via = parse_via(via_text)
            cseq = parse_cseq(request.headers.get("CSeq") or "")
        except ParseError as exc:
            self._reject_bad(request, peer, str(exc))
            return
        # Retransmissions and ACKs of our final responses: the transaction answers, fast.
        branch = via.branch or f"{request.call_id}/{cseq.seq}"
        method = "INVITE" if request.method == "ACK" else request.method
        key = (branch, method)
        entry = self._server_tx.get(key)
        if entry is not None:
            if request.method == "ACK":
                self._tx_event(entry, TxEvent.ACK, request)
            else:
                self._tx_event(entry, TxEvent.REQUEST, request)
            return
        problem, to = _validate(request, cseq)
        if problem is not None or to is None:
            self._reject_bad(request, peer, problem or "bad To")
            return
        _stamp_via(request, peer, via)
        routed = self._pop_own_routes(request)
        to_tag = to.tag
        if request.method == "ACK":
            if routed or to_tag:
                self._forward_ack(request)
            return
        if request.method == "CANCEL":
            self._on_cancel(request, peer, branch)
            return
        max_forwards = _max_forwards(request)
        if max_forwards is None:
            self._reply_stateless(request, peer, 400, "Bad Request (Max-Forwards)")
            return
        if max_forwards <= 0 and request.method != "OPTIONS":
            log.info("sip too many hops peer=%s call_id=%s status=483", peer, request.call_id)
            self._reply_stateless(request, peer, 483)
            return
        if to_tag:
            if routed and request.call_id in self._dialogs:
                self._forward_in_dialog(request, peer, key)
            else:
                self._reply_stateless(request, peer, 481)
            return
        if request.method in ("OPTIONS", "INVITE") and not self.active():
            log.info("sip refused on a standby node method=%s status=503", request.method)
            self._reply_stateless(request, peer, 503, extra=(("Retry-After", "5"),))
            return
        if request.method == "OPTIONS":
            self._reply_stateless(
                request,
                peer,
                200,
                extra=(("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", "")),
            )
            return
        if request.method == "INVITE":
            self._on_invite(request, peer, key, to)
            return
        if request.method == "BYE":
            self._reply_stateless(request, peer, 481)
        elif request.method in KNOWN_METHODS:
            self._reply_stateless(request, peer, 405, extra=(("Allow", ALLOW),))
        else:
            self._reply_stateless(request, peer, 501)

    def _reject_bad(self, request: Request, peer: Peer, problem: str) -> None:
        self._count("bad")
        log.info("sip rejected bad request peer=%s status=400 reason=%s", peer, problem)
        if request.method != "ACK":
            self._reply_stateless(request, peer, 400, f"Bad Request ({problem})"[:REASON_MAX])

    def _pop_own_routes(self, request: Request) -> bool:
        """Remove the Route entries that name us (loose routing); True when there were any."""
        popped = False
        while True:
            top = request.headers.get("Route")
            if top is None or not self._is_us(parse_name_addr(top).uri):
                return popped
            request.headers.pop_first("Route")
            popped = True

    def _is_us(self, uri: SipUri) -> bool:
        if not uri.is_sip:
            return False
        port = uri.port or 5060
        return port == self.sip_port and uri.host in (self.host, _normal_host(self.host))

    def _on_cancel(self, request: Request, peer: Peer, branch: str) -> None:
        invite_entry = self._server_tx.get((branch, "INVITE"))
        if invite_entry is None:
            self._reply_stateless(request, peer, 481)
            return
        entry = self._new_server_tx(request, peer, (branch, "CANCEL"))
        self._server_respond(entry, make_response(request, 200, to_tag=None))
        call = self._calls.get((branch, "INVITE"))
        if call is not None:
            self._feed(call, calls.CallerCancel())

    def _on_invite(self, request: Request, peer: Peer, key: tuple[str, str], to: NameAddr) -> None:
        unsupported = [
            tag for tag in request.headers.get_all("Require") if tag not in SUPPORTED_OPTIONS
        ]
        if unsupported:
            self._reply_stateless(
                request, peer, 420, extra=(("Unsupported", ", ".join(unsupported)),)
            )
            return
        try:
            uri = parse_uri(request.uri)
        except ParseError:
            self._reply_stateless(request, peer, 400, "Bad Request (Request-URI)")
            return
        if uri.scheme not in ("sip", "sips", "tel"):
            self._reply_stateless(request, peer, 416)
            return
        try:
            number = uri_number(uri) or uri_number(to.uri)
        except ParseError as exc:
            self._reject_bad(request, peer, f"dialed number: {exc}")
            return
        if not number:
            self._reply_stateless(request, peer, 404, "Not Found (no dialed number)")
            return
        try:
            routing = build_task_request(request, number, self.attach, peer.host)
        except InvalidInput as exc:
            self._reject_bad(request, peer, exc.message)
            return
        except Forbidden as exc:
            self._count("forbidden")
            log.warning(
                "sip refused an attach call_id=%s peer=%s status=403 reason=%s",
                request.call_id,
                peer,
                exc.message,
            )
            self._reply_stateless(request, peer, 403, f"Forbidden ({exc.message})"[:REASON_MAX])
            return
        mode = self.mode_for(number) or self.mode
        entry = self._new_server_tx(request, peer, key)
        flow = calls.CallFlow(mode=mode)
        call = _Call(flow, request, peer, entry, number)
        self._calls[key] = call
        self._count("invites")
        log.info(
            "sip call arrived call_id=%s entry_point=%s caller=%s mode=%s peer=%s",
            request.call_id,
            number,
            routing.task.caller,
            mode,
            peer,
        )
        self._feed(call, calls.Invite(), routing)

    # --- the call flow --------------------------------------------------------------------------

    def _feed(
        self, call: _Call, event: calls.CallEvent, routing: RoutingRequest | None = None
    ) -> None:
        if self._stopping:
            return
        decided = len(call.flow.log)
        if isinstance(event, calls.TaskCreated | calls.TaskChanged) and event.view is not None:
            queue = self.port.queue(event.view.queue)
            if queue is not None and queue.ring_timeout > 0:
                call.flow.ring_timeout = float(queue.ring_timeout)
        try:
            commands = call.flow.handle(event)
        except IllegalTransition as exc:
            log.debug("sip call event ignored call_id=%s error=%s", call.call_id, exc)
            return
        for sentence in call.flow.log[decided:]:
            log.info(
                "sip call decided call_id=%s task=%s decision=%r",
                call.call_id,
                call.flow.task_id,
                sentence,
            )
        for command in commands:
            self._execute(call, command, routing)

    def _execute(
        self, call: _Call, command: calls.CallCommand, routing: RoutingRequest | None
    ) -> None:
        if isinstance(command, calls.Respond):
            extra: tuple[tuple[str, str], ...] = ()
            if command.contact is not None:
                extra = (("Contact", f"<{contact_uri(command.contact)}>"),)
            to_tag = None if command.status == 100 else call.to_tag
            response = make_response(
                call.invite, command.status, command.reason, to_tag=to_tag, extra=extra
            )
            self._server_respond(call.entry, response)
            if command.status >= 200:
                self._count(f"final_{command.status}")
        elif isinstance(command, calls.RelayResponse):
            relayed = Response(
                command.response.headers.copy(),
                command.response.body,
                command.response.status,
                command.response.reason,
            )
            relayed.headers.pop_first("Via")
            self._server_respond(call.entry, relayed)
        elif isinstance(command, calls.CreateTask):
            assert routing is not None
            self._spawn(self._create_task(call, routing))
        elif isinstance(command, calls.WaitTask):
            call.waiter = self._spawn(self._wait_task(call, command.task_id, command.seen_status))
        elif isinstance(command, calls.ReportEvent):
            self._spawn(self._report_event(call, command.task_id, command.type))
        elif isinstance(command, calls.ReportDeliveryFailed):
            self._spawn(self._delivery_failed(call, command.task_id, command.disposition))
        elif isinstance(command, calls.ForwardInvite):
            self._spawn(self._forward_invite(call, command.branch, command.target))
        elif isinstance(command, calls.CancelBranch):
            self._cancel_branch(call, command.branch)
        elif isinstance(command, calls.HangUpBranch):
            self._hang_up_branch(call, command.branch, command.response)
        elif isinstance(command, calls.StartCallTimer):
            self._stop_call_timer(call, command.name)
            assert self._loop is not None
            call.timers[command.name] = self._loop.call_later(
                command.delay, self._call_timer, call, command.name
            )
        elif isinstance(command, calls.StopCallTimer):
            self._stop_call_timer(call, command.name)
        elif isinstance(command, calls.Finished):
            for handle in call.timers.values():
                handle.cancel()
            call.timers.clear()
            if call.waiter is not None and not call.waiter.done():
                call.waiter.cancel()
            self._count(f"outcome_{command.outcome}")
            if call.entry.key not in self._server_tx:
                self._calls.pop(call.entry.key, None)
            if self._dialogs.get(call.call_id) is call:
                self._loop_call_later(32.0, self._forget_dialog, call)
            log.debug(
                "sip call finished call_id=%s task=%s outcome=%s",
                call.call_id,
                call.flow.task_id,
                command.outcome,
            )

    def _loop_call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_later(delay, fn, *args)

    def _forget_dialog(self, call: _Call) -> None:
        if self._dialogs.get(call.call_id) is call:
            del self._dialogs[call.call_id]

    def _stop_call_timer(self, call: _Call, name: calls.CallTimer) -> None:
        handle = call.timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _call_timer(self, call: _Call, name: calls.CallTimer) -> None:
        call.timers.pop(name, None)
        self._feed(call, calls.TimerFired(name))

    async def _create_task(self, call: _Call, routing: RoutingRequest) -> None:
        try:
            view, created = await asyncio.wait_for(
                self.port.async_create_task_ex(routing.task), PORT_TIMEOUT
            )
        except NotFound as exc:
            self._feed(call, calls.CreateFailed(404, f"Not Found ({exc.message})"[:REASON_MAX]))
            return
        except InvalidInput as exc:
            self._feed(call, calls.CreateFailed(400, f"Bad Request ({exc.message})"[:REASON_MAX]))
            return
        except ExpertlineError as exc:  # Unavailable, and the runtime's own "unavailable" error
            if exc.code == "unavailable":
                log.warning("sip call refused call_id=%s reason=%s", call.call_id, exc.message)
            else:
                log.warning("sip task refused call_id=%s error=%s", call.call_id, exc.message)
            self._feed(call, calls.CreateFailed(503, "Service Unavailable"))
            return
        except TimeoutError:
            log.warning(
                "sip task creation timed out call_id=%s after=%ss", call.call_id, PORT_TIMEOUT
            )
            self._feed(call, calls.CreateFailed(503, "Service Unavailable"))
            return
        except Exception:
            log.exception("sip task creation failed call_id=%s", call.call_id)
            self._feed(call, calls.CreateFailed(500, "Server Internal Error"))
            return
        if not created and not routing.attach:
            # Another call (or a routing client) owns this external id: joining its task would
            # let this caller cancel it or receive its expert. Nothing was changed.
            log.warning(
                "sip refused a call whose external id is in use call_id=%s peer=%s status=403",
                call.call_id,
                call.peer,
            )
            self._feed(call, calls.CreateFailed(403, "Forbidden (external id already in use)"))
            return
        log.debug(
            "sip task %s call_id=%s task=%s status=%s",
            "created" if created else "attached",
            call.call_id,
            view.id,
            view.status,
        )
        self._feed(call, calls.TaskCreated(view))

    async def _wait_task(self, call: _Call, task_id: str, seen: str) -> None:
        try:
            view = await asyncio.wait_for(
                self.port.async_wait_change(task_id, seen, self.wait_slice),
                self.wait_slice + PORT_TIMEOUT,
            )
        except Exception:
            call.wait_failures += 1
            delay = min(30.0, 0.5 * 2**call.wait_failures)
            log.exception(
                "sip task wait failed call_id=%s task=%s retry_in=%.1fs",
                call.call_id,
                task_id,
                delay,
            )
            await asyncio.sleep(delay)
            view = None
        else:
            call.wait_failures = 0
        self._feed(call, calls.TaskChanged(view))

    async def _report_event(self, call: _Call, task_id: str, type_: TaskEventType) -> None:
        try:
            await asyncio.wait_for(self.port.async_task_event(task_id, type_), PORT_TIMEOUT)
        except ExpertlineError as exc:
            log.info(
                "sip task event not applied call_id=%s task=%s event=%s reason=%s",
                call.call_id,
                task_id,
                type_,
                exc.message,
            )
        except Exception:
            log.exception("sip task event failed task=%s event=%s", task_id, type_)

    async def _delivery_failed(self, call: _Call, task_id: str, disposition: int) -> None:
        view: TaskView | None
        try:
            view = await asyncio.wait_for(
                self.port.async_delivery_failed(task_id, disposition), PORT_TIMEOUT
            )
        except ExpertlineError as exc:
            log.info("sip delivery failure not applied task=%s reason=%s", task_id, exc.message)
            view = self.port.task(task_id)
        except Exception:
            log.exception("sip delivery failure report failed task=%s", task_id)
            view = self.port.task(task_id)
        self._feed(call, calls.TaskChanged(view))

    # --- proxy mode: branches to the experts' phones ----------------------------------------

    def _our_via(self, transport: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"SIP/2.0/{transport.upper()} {host}:{self.sip_port};branch={new_branch()};rport"

    def _record_route(self, transport: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"<sip:{host}:{self.sip_port};transport={transport};lr>"

    async def _forward_invite(self, call: _Call, branch_id: int, target: str) -> None:
        uri = parse_uri(target)
        peer, allowed = await self._resolve_target(uri)
        invite = call.invite
        headers = invite.headers.copy()
        headers.set("Max-Forwards", str(max(0, (_max_forwards(invite) or 70) - 1)))
        if peer is not None:
            if peer.transport != call.peer.transport:
                headers.add_first("Record-Route", self._record_route(call.peer.transport))
            headers.add_first("Record-Route", self._record_route(peer.transport))
        headers.add_first("Via", self._our_via(peer.transport if peer else "udp"))
        request = Request(headers, invite.body, "INVITE", target)
        branch = _Branch(branch_id, request, peer if allowed else None)
        call.branches[branch_id] = branch
        if not allowed:
            log.warning(
                "sip phone refused call_id=%s task=%s target=%s reason=%s",
                call.call_id,
                call.flow.task_id,
                target,
                "host is not an allowed SIP target (experts' phone hosts, sip_targets)",
            )
            self._count("target_refused")
            self._feed(call, calls.BranchRefused(branch_id, target_host(uri)))
            return
        if peer is None:
            log.info("sip phone unreachable call_id=%s target=%s", call.call_id, target)
            self._feed(call, calls.BranchFailed(branch_id))
            return
        self._dialogs[call.call_id] = call

        def deliver(message: Request | Response) -> None:
            assert isinstance(message, Response)
            if message.status < 200 and not branch.provisional:
                branch.provisional = True
                if branch.cancel_pending:
                    self._send_cancel(branch)
            self._feed(call, calls.BranchResponse(branch_id, message))

        def failed(why: str) -> None:
            log.info(
                "sip phone did not respond call_id=%s branch=%d why=%s",
                call.call_id,
                branch_id,
                why,
            )
            self._feed(call, calls.BranchFailed(branch_id))

        branch.entry = self._new_client_tx(request, peer, deliver, failed)

    async def _resolve_target(self, uri: SipUri) -> tuple[Peer | None, bool]:
        """Where to send a call, and whether it may go there: a host allowed by name is
        resolved; another is looked up only when allowed networks may admit its address."""
        if self.targets.allows_name(uri):
            return await self._resolve(uri), True
        if not self.targets.has_networks:
            return None, False
        peer = await self._resolve(uri)
        return peer, peer is not None and self.targets.allows_address(peer.host)

    async def _resolve(self, uri: SipUri) -> Peer | None:
        transport: TransportName = "tcp" if uri.transport == "tcp" else "udp"
        port = uri.port or 5060
        host = uri.params.get("maddr") or uri.host
        try:
            ipaddress.ip_address(host)
            return Peer(transport, host, port)
        except ValueError:
            pass
        assert self._loop is not None
        try:
            infos = await asyncio.wait_for(
                self._loop.getaddrinfo(
                    host,
                    port,
                    type=socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM,
                ),
                2.0,
            )
        except (OSError, TimeoutError):
            return None
        if not infos:
            return None
        return Peer(transport, str(infos[0][4][0]), port)

    def _cancel_branch(self, call: _Call, branch_id: int) -> None:
        branch = call.branches.get(branch_id)
        if branch is None or branch.cancelled or branch.entry is None:
            return
        if branch.provisional:
            self._send_cancel(branch)
        else:
            branch.cancel_pending = True  # RFC 3261 §9.1: wait for a provisional response

    def _send_cancel(self, branch: _Branch) -> None:
        assert branch.peer is not None and branch.entry is not None
        if branch.cancelled or branch.entry.tx.state not in (TxState.CALLING, TxState.PROCEEDING):
            return
        branch.cancelled = True
        invite = branch.request
        headers = Headers()
        headers.add("Via", invite.headers.get("Via") or "")
        headers.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            headers.add(name, invite.headers.get(name) or "")
        headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
        for route in invite.headers.get_all("Route"):
            headers.add("Route", route)
        cancel = Request(headers, b"", "CANCEL", invite.uri)
        self._new_client_tx(cancel, branch.peer, lambda m: None, lambda why: None)

    def _hang_up_branch(self, call: _Call, branch_id: int, response: Response) -> None:
        """A phone answered a branch we no longer want: ACK its 2xx, then BYE it."""
        branch = call.branches.get(branch_id)
        if branch is None or branch.peer is None:
            return
        contact = response.headers.get("Contact")
        target = parse_name_addr(contact).uri if contact else parse_uri(branch.request.uri)
        base = Headers()
        base.add("Max-Forwards", "70")
        base.add("From", branch.request.headers.get("From") or "")
        base.add("To", response.headers.get("To") or "")
        base.add("Call-ID", call.call_id)
        seq = branch.request.cseq.seq
        ack_headers = base.copy()
        ack_headers.add_first("Via", self._our_via(branch.peer.transport))
        ack_headers.add("CSeq", f"{seq} ACK")
        self._send(branch.peer, Request(ack_headers, b"", "ACK", str(target)))
        if branch.hung_up:
            return
        branch.hung_up = True
        bye_headers = base.copy()
        bye_headers.add_first("Via", self._our_via(branch.peer.transport))
        bye_headers.add("CSeq", f"{seq + 1} BYE")
        bye = Request(bye_headers, b"", "BYE", str(target))
        self._new_client_tx(bye, branch.peer, lambda m: None, lambda why: None)
        log.info("sip hung up a stale branch call_id=%s branch=%d", call.call_id, branch_id)

    # --- proxy mode: in-dialog requests -------------------------------------------------------

    def _next_hop(self, request: Request) -> SipUri:
        route = request.headers.get("Route")
        return parse_name_addr(route).uri if route else parse_uri(request.uri)

    def _forward_ack(self, request: Request) -> None:
        call = self._dialogs.get(request.call_id)
        if call is None:
            return
        self._spawn(self._forward_stateless(request))

    async def _forward_stateless(self, request: Request) -> None:
        peer = await self._resolve(self._next_hop(request))
        if peer is None:
            return
        headers = request.headers.copy()
        headers.set("Max-Forwards", str(max(0, (_max_forwards(request) or 70) - 1)))
        headers.add_first("Via", self._our_via(peer.transport))
        self._send(peer, Request(headers, request.body, request.method, request.uri))

    def _forward_in_dialog(self, request: Request, peer: Peer, key: tuple[str, str]) -> None:
        call = self._dialogs[request.call_id]
        server = self._new_server_tx(request, peer, key)
        self._spawn(self._forward_stateful(call, request, server))

    async def _forward_stateful(self, call: _Call, request: Request, server: _TxEntry) -> None:
        next_peer = await self._resolve(self._next_hop(request))
        if next_peer is None:
            self._server_respond(server, make_response(request, 404, to_tag=None))
            return
        headers = request.headers.copy()
        headers.set("Max-Forwards", str(max(0, (_max_forwards(request) or 70) - 1)))
        headers.add_first("Via", self._our_via(next_peer.transport))
        forwarded = Request(headers, request.body, request.method, request.uri)

        def relay(message: Request | Response) -> None:
            assert isinstance(message, Response)
            if message.status == 100:
                return
            relayed = Response(message.headers.copy(), message.body, message.status, message.reason)
            relayed.headers.pop_first("Via")
            self._server_respond(server, relayed)

        def failed(why: str) -> None:
            status = 408 if why.startswith("timer") else 503
            self._server_respond(server, make_response(request, status, to_tag=None))

        self._new_client_tx(forwarded, next_peer, relay, failed)
        if request.method == "BYE":
            from_caller = request.from_.tag == call.invite.from_.tag
            self._feed(call, calls.Bye(from_caller))

    # --- responses ------------------------------------------------------------------------------

    def _on_response(self, response: Response, peer: Peer) -> None:
        via = response.top_via
        key = (via.branch or "", response.cseq.method)
        entry = self._client_tx.get(key)
        if entry is None:
            log.debug("sip response without transaction status=%d key=%s", response.status, key)
            return
        event = response_event("recv", response.status, isinstance(entry.tx, ClientInvite))
        self._tx_event(entry, event, response)


# --- helpers ---------------------------------------------------------------------------------


def _validate(request: Request, cseq: CSeq) -> tuple[str | None, NameAddr | None]:
    """The first reason this request cannot be processed (or None), and its parsed To
    (RFC 3261 §8.2; the top Via and the CSeq were parsed by the caller)."""
    h = request.headers
    for name in ("From", "To", "Call-ID"):
        if not h.has(name):
            return f"missing {name}", None
    try:
        vias = h.get_all("Via")
        for value in vias[1:]:
            parse_via(value)
        parse_name_addr(h.get("From") or "")
        to = parse_name_addr(h.get("To") or "")
    except ParseError as exc:
        return str(exc), None
    if cseq.method != request.method:
        return "CSeq method does not match the request", None
    if not (h.get("Call-ID") or "").strip():
        return "empty Call-ID", None
    if _max_forwards(request) is None:
        return "bad Max-Forwards", None
    return None, to


def _max_forwards(request: Request) -> int | None:
    value = request.headers.get("Max-Forwards")
    if value is None:
        return 70
    value = value.strip()
    if not is_digits(value) or len(value) > 3 or int(value) > 255:
        return None
    return int(value)


def _stamp_via(request: Request, peer: Peer, via: Via) -> None:
    """RFC 3261 §18.2.1 / RFC 3581: note where the request really came from in the top Via."""
    changed = False
    if via.host != peer.host:
        via.params["received"] = peer.host
        changed = True
    if "rport" in via.params and via.params["rport"] is None:
        via.params["rport"] = str(peer.port)
        changed = True
    if changed:
        request.headers.pop_first("Via")
        request.headers.add_first("Via", str(via))


def _normal_host(host: str) -> str:
    return "127.0.0.1" if host in ("localhost", "0.0.0.0") else host


def contact_uri(label: str) -> str:
    """A label as a Contact URI: URIs as they are, bare numbers as ``tel:``."""
    if ":" in label and label.split(":", 1)[0].isalpha():
        return label
    return f"tel:{label}"


def create_sip_front(ctx: Any, port: TaskPort, environ: dict[str, str] | None = None) -> SipFront:
    """The SIP front for a node: listens on ``ctx.settings.sip`` in ``ctx.settings.sip_mode``;
    an entry point's own ``sip_mode`` (in the runtime's routing configuration) wins.
    ValueError when the attach settings are incomplete (the node refuses to start rather
    than run with a half-configured trust)."""
    settings = ctx.settings
    host, sip_port = parse_host_port(settings.sip)
    health: Health | None = ctx.services.get("health")
    active = (lambda: health.active) if health is not None else None
    attach = attach_policy(
        settings.sip_attach_key_env,
        settings.sip_trusted_list,
        dict(os.environ) if environ is None else environ,
    )
    targets = OutboundTargets(settings.sip_targets_list, config=lambda: port.config)
    front = SipFront(
        port,
        host,
        sip_port,
        mode=settings.sip_mode,
        active=active,
        health=health,
        attach=attach,
        targets=targets,
    )
    log.info(
        "sip trust attach=%s trusted=%s extra_targets=%s",
        "on" if attach.enabled else "off",
        ",".join(map(str, attach.trusted)) or "-",
        ",".join(targets.extra) or "-",
    )
    return front


__all__ = ["SipFront", "contact_uri", "create_sip_front"]
