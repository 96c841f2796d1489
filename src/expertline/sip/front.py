"""The SIP front: turns INVITEs to entry points into routed calls, over the runtime's ``TaskPort``.

It wires the parts, each with one job:

- ``sip.layer``: the transport and the RFC 3261 transactions on it (timers, retransmissions);
- ``sip.checks``: what a request must be before anything is done with it;
- ``sip.calls``: each call's flow, a state machine that decides (no I/O);
- ``sip.registry``: the calls in progress, by transaction and by dialog;
- ``sip.tasks``: each call's side toward the runtime (create, wait, report);
- ``sip.proxy``: proxy mode, the legs toward the experts' phones and their dialogs.

Requests addressed to an entry point become calls; in-dialog requests that carry our
Record-Route are proxied on (ACK statelessly, the rest statefully); responses are matched to
our client transactions. Everything the network sends is validated first: a bad request gets
a 4xx and changes nothing; bytes that are not SIP at all are dropped.

Decisions are logged one per line, ``sip <what> key=value ...``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

from expertline.errors import Forbidden, InvalidInput
from expertline.health import Health
from expertline.machine import IllegalTransition
from expertline.runtime.ports import TaskPort
from expertline.settings import SipMode, parse_host_port
from expertline.sip import calls
from expertline.sip.checks import (
    ALLOW,
    KNOWN_METHODS,
    REASON_MAX,
    SUPPORTED_OPTIONS,
    contact_uri,
    max_forwards,
    stamp_via,
    upstream_timeout,
    validate,
    via_count,
)
from expertline.sip.layer import TransactionLayer, TxKey
from expertline.sip.message import (
    SIP_VERSION,
    NameAddr,
    ParseError,
    Request,
    make_response,
    parse_cseq,
    parse_uri,
    parse_via,
)
from expertline.sip.proxy import ProxyLegs, relayed
from expertline.sip.registry import Call, CallRegistry
from expertline.sip.task_request import RoutingRequest, build_task_request, uri_number
from expertline.sip.tasks import WAIT_SLICE, TaskLeg
from expertline.sip.transaction import DEFAULT_TIMERS, TimerValues
from expertline.sip.transport import Peer
from expertline.sip.trust import AttachPolicy, OutboundTargets, attach_policy

log = logging.getLogger("expertline.sip")

LIFETIME_SLACK = 1.0  # seconds either side of the upstream INVITE lifetime
STANDBY_RETRY_AFTER = "5"  # seconds an upstream proxy waits before it tries this node again


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
        refresh: float = calls.QUEUED_REFRESH,
        upstream_lifetime: float = 0.0,
    ) -> None:
        self.port = port
        self.refresh = refresh  # seconds between 182 Queued while a caller waits
        # The INVITE lifetime of the proxy in front (0: unknown), see _proxy_timer_cancel.
        self.upstream_lifetime = upstream_lifetime
        # Who may join a call to an existing task (default: nobody), and where calls may go.
        self.attach = attach or AttachPolicy()
        self.targets = targets or OutboundTargets(config=lambda: port.config)
        # Is this the node that takes calls (HA: the active one)? Standby answers 503.
        self.active = active or (lambda: True)
        self.health = health
        self.mode = mode
        # An entry point's own sip_mode, from the routing configuration the runtime holds.
        self.mode_for = mode_for or (lambda number: port.config.sip_modes.get(number))
        self.registry = CallRegistry()
        self.layer = TransactionLayer(self._on_request, self.registry.server_done, timers)
        self.tasks = TaskLeg(port, self._feed, wait_slice)
        self.proxy = ProxyLegs(self.layer, self.registry, self._feed)
        self.stats = self.layer.stats  # messages received and sent, INVITEs, outcomes...
        self._bind = (host, sip_port)
        self._running: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def sip_port(self) -> int:
        return self.layer.port

    async def async_start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.layer.async_start(*self._bind)
        if self.health is not None:
            self.health.report(
                "sip", True, f"udp,tcp {self.layer.host}:{self.sip_port} {self.mode}"
            )
        log.info(
            "sip listening host=%s port=%d transports=udp,tcp mode=%s",
            self.layer.host,
            self.sip_port,
            self.mode,
        )

    async def async_stop(self) -> None:
        self._stopping = True  # nothing new is taken from now on
        if self.health is not None:
            self.health.report("sip", False, "stopped")
        for task in list(self._running):
            task.cancel()
        for call in self.registry:
            call.stop_all()
        await self.layer.async_stop()
        log.info("sip stopped calls_in_progress=%d", len(self.registry))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    # --- requests -------------------------------------------------------------------------------

    def _on_request(self, request: Request, peer: Peer) -> None:
        screened = self._screen(request, peer)
        if screened is not None:
            self._route(request, peer, *screened)

    def _screen(self, request: Request, peer: Peer) -> tuple[TxKey, NameAddr] | None:
        """The request's transaction key and To, once it passed every check (None: it was
        answered already: a retransmission, or a refusal)."""
        if request.version != SIP_VERSION:
            if request.method != "ACK":
                self.layer.reply_stateless(request, peer, 505)
            return None
        via_text = request.headers.get("Via")
        if via_text is None:
            log.info("sip dropped request without Via peer=%s", peer)
            return None
        try:
            via = parse_via(via_text)
            cseq = parse_cseq(request.headers.get("CSeq") or "")
        except ParseError as exc:
            self.layer.reject_bad(request, peer, str(exc))
            return None
        # Retransmissions and ACKs of our final responses: the transaction answers, fast.
        branch = via.branch or f"{request.call_id}/{cseq.seq}"
        key = (branch, "INVITE" if request.method == "ACK" else request.method)
        if self.layer.absorb(key, request):
            return None
        problem, to = validate(request, cseq)
        if problem is not None or to is None:
            self.layer.reject_bad(request, peer, problem or "bad To")
            return None
        stamp_via(request, peer, via)
        return key, to

    def _route(self, request: Request, peer: Peer, key: TxKey, to: NameAddr) -> None:
        """ACK and CANCEL, hop counting, and the requests of a dialog we are in."""
        routed = self.proxy.pop_own_routes(request)
        if request.method == "ACK":
            if (routed or to.tag) and self.registry.dialog(request.call_id) is not None:
                self._spawn(self.proxy.async_forward_ack(request))
            return
        if request.method == "CANCEL":
            self._on_cancel(request, peer, key[0])
            return
        hops = max_forwards(request)
        if hops is None:
            self.layer.reply_stateless(request, peer, 400, "Bad Request (Max-Forwards)")
        elif hops <= 0 and request.method != "OPTIONS":
            log.info("sip too many hops peer=%s call_id=%s status=483", peer, request.call_id)
            self.layer.reply_stateless(request, peer, 483)
        elif to.tag:
            call = self.registry.dialog(request.call_id) if routed else None
            if call is not None:
                self._spawn(self.proxy.forward_in_dialog(call, request, peer, key))
            else:
                self.layer.reply_stateless(request, peer, 481)
        else:
            self._serve(request, peer, key, to)

    def _serve(self, request: Request, peer: Peer, key: TxKey, to: NameAddr) -> None:
        """A request outside any dialog: OPTIONS and INVITE are ours; the rest is refused."""
        method = request.method
        if method in ("OPTIONS", "INVITE") and not self.active():
            log.info("sip refused on a standby node method=%s status=503", method)
            retry = (("Retry-After", STANDBY_RETRY_AFTER),)
            self.layer.reply_stateless(request, peer, 503, extra=retry)
        elif method == "OPTIONS":
            options = (("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", ""))
            self.layer.reply_stateless(request, peer, 200, extra=options)
        elif method == "INVITE":
            self._on_invite(request, peer, key, to)
        elif method == "BYE":
            self.layer.reply_stateless(request, peer, 481)
        elif method in KNOWN_METHODS:
            self.layer.reply_stateless(request, peer, 405, extra=(("Allow", ALLOW),))
        else:
            self.layer.reply_stateless(request, peer, 501)

    def _on_cancel(self, request: Request, peer: Peer, branch: str) -> None:
        invite_key = (branch, "INVITE")
        if invite_key not in self.layer.server_tx:
            self.layer.reply_stateless(request, peer, 481)
            return
        entry = self.layer.server(request, peer, (branch, "CANCEL"))
        self.layer.respond(entry, make_response(request, 200, to_tag=None))
        call = self.registry.get(invite_key)
        if call is not None:
            reason = upstream_timeout(request) or self._proxy_timer_cancel(call)
            self._feed(call, calls.CallerCancel(reason))

    def _proxy_timer_cancel(self, call: Call) -> str | None:
        """A CANCEL without a timer Reason is still the proxy's timer when the INVITE came
        through a proxy (two Vias or more; the proxy's CANCEL has only its own) and the CANCEL
        came just as the INVITE reached the proxy's INVITE lifetime: Kamailio's
        max_inv_lifetime CANCEL says nothing of why. The proxy started its clock a moment
        before the INVITE got here, so ``LIFETIME_SLACK`` either side counts."""
        if self.upstream_lifetime <= 0 or via_count(call.invite) < 2:
            return None
        age = time.monotonic() - call.received_at
        if abs(age - self.upstream_lifetime) > LIFETIME_SLACK:
            return None
        return (
            f"none, relayed at the INVITE's age {age:.1f} s, the upstream proxy's INVITE "
            f"lifetime ({self.upstream_lifetime:g} s)"
        )

    def _on_invite(self, request: Request, peer: Peer, key: TxKey, to: NameAddr) -> None:
        found = self._routing_request(request, peer, to)
        if found is None:
            return
        number, routing = found
        mode = self.mode_for(number) or self.mode
        entry = self.layer.server(request, peer, key)
        call = Call(calls.CallFlow(mode=mode, refresh=self.refresh), request, peer, entry, number)
        self.registry.add(call)
        self.layer.count("invites")
        log.info(
            "sip call arrived call_id=%s entry_point=%s caller=%s mode=%s peer=%s",
            request.call_id,
            number,
            routing.task.caller,
            mode,
            peer,
        )
        self._feed(call, calls.Invite(), routing)

    def _routing_request(
        self, request: Request, peer: Peer, to: NameAddr
    ) -> tuple[str, RoutingRequest] | None:
        """The dialed number and the task to ask for (None: the INVITE was refused)."""
        reply = self.layer.reply_stateless
        unsupported = [t for t in request.headers.get_all("Require") if t not in SUPPORTED_OPTIONS]
        if unsupported:
            reply(request, peer, 420, extra=(("Unsupported", ", ".join(unsupported)),))
            return None
        try:
            uri = parse_uri(request.uri)
        except ParseError:
            reply(request, peer, 400, "Bad Request (Request-URI)")
            return None
        if uri.scheme not in ("sip", "sips", "tel"):
            reply(request, peer, 416)
            return None
        try:
            number = uri_number(uri) or uri_number(to.uri)
        except ParseError as exc:
            self.layer.reject_bad(request, peer, f"dialed number: {exc}")
            return None
        if not number:
            reply(request, peer, 404, "Not Found (no dialed number)")
            return None
        try:
            return number, build_task_request(request, number, self.attach, peer.host)
        except InvalidInput as exc:
            self.layer.reject_bad(request, peer, exc.message)
        except Forbidden as exc:
            self.layer.count("forbidden")
            log.warning(
                "sip refused an attach call_id=%s peer=%s status=403 reason=%s",
                request.call_id,
                peer,
                exc.message,
            )
            reply(request, peer, 403, f"Forbidden ({exc.message})"[:REASON_MAX])
        return None

    # --- the call flow --------------------------------------------------------------------------

    def _feed(
        self, call: Call, event: calls.CallEvent, routing: RoutingRequest | None = None
    ) -> None:
        if self._stopping:
            return
        decided = len(call.flow.log)
        if isinstance(event, (calls.TaskCreated, calls.TaskChanged)) and event.view is not None:
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
        self, call: Call, command: calls.CallCommand, routing: RoutingRequest | None
    ) -> None:
        # isinstance, not match: this runs for every command, and class patterns cost more.
        # The commands of every call come first.
        if isinstance(command, calls.Respond):
            self._respond(call, command)
        elif isinstance(command, calls.CreateTask):
            assert routing is not None
            self._spawn(self.tasks.async_create(call, routing))
        elif isinstance(command, calls.ReportEvent):
            self._spawn(self.tasks.async_report(call, command))
        elif isinstance(command, calls.Finished):
            self._finished(call, command.outcome)
        elif isinstance(command, calls.WaitTask):
            wait = self.tasks.async_wait(call, command.task_id, command.seen_status)
            call.waiter = self._spawn(wait)
        elif isinstance(command, calls.StartCallTimer):
            call.stop_timer(command.name)
            assert self._loop is not None
            call.timers[command.name] = self._loop.call_later(
                command.delay, self._call_timer, call, command.name
            )
        elif isinstance(command, calls.StopCallTimer):
            call.stop_timer(command.name)
        else:
            self._execute_proxy(call, command)

    def _execute_proxy(self, call: Call, command: calls.CallCommand) -> None:
        """The commands of proxy mode: the expert's phone and the requeue when it fails."""
        if isinstance(command, calls.RelayResponse):
            self.layer.respond(call.entry, relayed(command.response))
        elif isinstance(command, calls.ReportDeliveryFailed):
            failed = self.tasks.async_delivery_failed(call, command.task_id, command.disposition)
            self._spawn(failed)
        elif isinstance(command, calls.ForwardInvite):
            forward = self.proxy.async_forward_invite(
                call, command.branch, command.target, self.targets
            )
            self._spawn(forward)
        elif isinstance(command, calls.CancelBranch):
            self.proxy.cancel_branch(call, command.branch)
        elif isinstance(command, calls.HangUpBranch):
            self.proxy.hang_up_branch(call, command.branch, command.response)

    def _respond(self, call: Call, command: calls.Respond) -> None:
        """Answer the caller's INVITE ourselves."""
        extra: tuple[tuple[str, str], ...] = ()
        if command.contact is not None:
            extra = (("Contact", f"<{contact_uri(command.contact)}>"),)
        elif command.status == 503:  # the runtime cannot take the call now: try again soon
            extra = (("Retry-After", STANDBY_RETRY_AFTER),)
        to_tag = None if command.status == 100 else call.to_tag
        response = make_response(
            call.invite, command.status, command.reason, to_tag=to_tag, extra=extra
        )
        self.layer.respond(call.entry, response)
        if command.status >= 200:
            self.layer.count(f"final_{command.status}")

    def _call_timer(self, call: Call, name: calls.CallTimer) -> None:
        call.timers.pop(name, None)
        self._feed(call, calls.TimerFired(name))

    def _finished(self, call: Call, outcome: str) -> None:
        call.stop_all()
        self.layer.count(f"outcome_{outcome}")
        self.registry.finished(call, server_live=call.entry.key in self.layer.server_tx)
        log.debug(
            "sip call finished call_id=%s task=%s outcome=%s",
            call.call_id,
            call.flow.task_id,
            outcome,
        )


def create_sip_front(ctx: Any, port: TaskPort, environ: dict[str, str] | None = None) -> SipFront:
    """The SIP front for a node: listens on ``ctx.settings.sip`` in ``ctx.settings.sip_mode``;
    an entry point's own ``sip_mode`` (in the runtime's routing configuration) wins.
    ValueError when the attach settings are incomplete (the node refuses to start rather
    than run with a half-configured trust)."""
    settings = ctx.settings
    host, sip_port = parse_host_port(settings.sip)
    health: Health | None = ctx.services.health
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
        refresh=settings.sip_refresh,
        upstream_lifetime=settings.sip_upstream_lifetime,
    )
    log.info(
        "sip trust attach=%s trusted=%s extra_targets=%s",
        "on" if attach.enabled else "off",
        ",".join(map(str, attach.trusted)) or "-",
        ",".join(targets.extra) or "-",
    )
    return front


__all__ = ["SipFront", "contact_uri", "create_sip_front"]
