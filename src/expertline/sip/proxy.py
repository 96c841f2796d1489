"""Proxy mode: the legs toward the experts' phones, and the requests of their dialogs.

When an expert accepts, the caller's INVITE goes on to the expert's phone (a *branch*), with
our Record-Route so the dialog's later requests (ACK, BYE, re-INVITE) come through us. The
phone is called only when its host is an allowed target (``sip.trust.OutboundTargets``). A
branch given up is CANCELled (after its first provisional response, RFC 3261 §9.1); one that
answers all the same is acknowledged and hung up. What happens on each leg is fed back to the
call's flow (``sip.calls``), which decides.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Coroutine
from typing import Any

from expertline.sip import calls
from expertline.sip.checks import decremented_max_forwards, normal_host
from expertline.sip.layer import SipMessage, TransactionLayer, TxEntry, TxKey
from expertline.sip.message import (
    Headers,
    Request,
    Response,
    SipUri,
    make_response,
    new_branch,
    parse_name_addr,
    parse_uri,
)
from expertline.sip.registry import Branch, Call, CallRegistry, Feed
from expertline.sip.transaction import TxState
from expertline.sip.transport import Peer, TransportName
from expertline.sip.trust import OutboundTargets, target_host

log = logging.getLogger("expertline.sip")

RESOLVE_TIMEOUT = 2.0  # seconds for the system resolver to name a phone's host


def relayed(response: Response) -> Response:
    """A response from the next hop as it goes back: our top Via removed (RFC 3261 §16.7)."""
    copy = Response(response.headers.copy(), response.body, response.status, response.reason)
    copy.headers.pop_first("Via")
    return copy


def _next_hop(request: Request) -> SipUri:
    route = request.headers.get("Route")
    return parse_name_addr(route).uri if route else parse_uri(request.uri)


class ProxyLegs:
    """The branches of the calls in proxy mode and the forwarding of their dialogs' requests."""

    def __init__(self, layer: TransactionLayer, registry: CallRegistry, feed: Feed) -> None:
        self.layer = layer
        self.registry = registry
        self.feed = feed  # what happens on a leg goes to its call's flow

    # --- our own address ---------------------------------------------------------------------

    def _host(self) -> str:
        host = self.layer.host
        return f"[{host}]" if ":" in host else host

    def our_via(self, transport: str) -> str:
        return (
            f"SIP/2.0/{transport.upper()} {self._host()}:{self.layer.port}"
            f";branch={new_branch()};rport"
        )

    def record_route(self, transport: str) -> str:
        return f"<sip:{self._host()}:{self.layer.port};transport={transport};lr>"

    def pop_own_routes(self, request: Request) -> bool:
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
        host = self.layer.host
        return (uri.port or 5060) == self.layer.port and uri.host in (host, normal_host(host))

    def _forwarded(self, request: Request, transport: str, uri: str | None = None) -> Request:
        """A copy of ``request`` for the next hop: Max-Forwards less one, our Via on top."""
        headers = request.headers.copy()
        headers.set("Max-Forwards", decremented_max_forwards(request))
        headers.add_first("Via", self.our_via(transport))
        return Request(headers, request.body, request.method, uri or request.uri)

    # --- where calls go ----------------------------------------------------------------------

    async def _resolve_target(
        self, uri: SipUri, targets: OutboundTargets
    ) -> tuple[Peer | None, bool]:
        """Where to send a call, and whether it may go there: a host allowed by name is
        resolved; another is looked up only when allowed networks may admit its address."""
        if targets.allows_name(uri):
            return await self._resolve(uri), True
        if not targets.has_networks:
            return None, False
        peer = await self._resolve(uri)
        return peer, peer is not None and targets.allows_address(peer.host)

    async def _resolve(self, uri: SipUri) -> Peer | None:
        transport: TransportName = "tcp" if uri.transport == "tcp" else "udp"
        port = uri.port or 5060
        host = uri.params.get("maddr") or uri.host
        try:
            ipaddress.ip_address(host)
            return Peer(transport, host, port)
        except ValueError:
            pass
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        lookup = asyncio.get_running_loop().getaddrinfo(host, port, type=kind)
        try:
            infos = await asyncio.wait_for(lookup, RESOLVE_TIMEOUT)
        except (OSError, TimeoutError):
            return None
        if not infos:
            return None
        return Peer(transport, str(infos[0][4][0]), port)

    # --- branches ----------------------------------------------------------------------------

    async def async_forward_invite(
        self, call: Call, branch_id: int, target: str, targets: OutboundTargets
    ) -> None:
        """Call the expert's phone ``target`` with the caller's INVITE (branch ``branch_id``),
        if ``targets`` allow its host."""
        uri = parse_uri(target)
        peer, allowed = await self._resolve_target(uri, targets)
        request = self._forwarded(call.invite, peer.transport if peer else "udp", target)
        if peer is not None:
            if peer.transport != call.peer.transport:  # RFC 5658: one entry per side
                request.headers.add_first("Record-Route", self.record_route(call.peer.transport))
            request.headers.add_first("Record-Route", self.record_route(peer.transport))
        branch = Branch(branch_id, request, peer if allowed else None)
        call.branches[branch_id] = branch
        if not allowed:
            log.warning(
                "sip phone refused call_id=%s task=%s target=%s reason=%s",
                call.call_id,
                call.flow.task_id,
                target,
                "host is not an allowed SIP target (experts' phone hosts, sip_targets)",
            )
            self.layer.count("target_refused")
            self.feed(call, calls.BranchRefused(branch_id, target_host(uri)))
            return
        if peer is None:
            log.info("sip phone unreachable call_id=%s target=%s", call.call_id, target)
            self.feed(call, calls.BranchFailed(branch_id))
            return
        self.registry.add_dialog(call)

        def deliver(message: SipMessage) -> None:
            assert isinstance(message, Response)
            if message.status < 200 and not branch.provisional:
                branch.provisional = True
                if branch.cancel_pending:
                    self._send_cancel(branch)
            self.feed(call, calls.BranchResponse(branch_id, message))

        def failed(why: str) -> None:
            log.info(
                "sip phone did not respond call_id=%s branch=%d why=%s",
                call.call_id,
                branch_id,
                why,
            )
            self.feed(call, calls.BranchFailed(branch_id))

        branch.entry = self.layer.client(request, peer, deliver, failed)

    def cancel_branch(self, call: Call, branch_id: int) -> None:
        branch = call.branches.get(branch_id)
        if branch is None or branch.cancelled or branch.entry is None:
            return
        if branch.provisional:
            self._send_cancel(branch)
        else:
            branch.cancel_pending = True  # RFC 3261 §9.1: wait for a provisional response

    def _send_cancel(self, branch: Branch) -> None:
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
        self.layer.client(Request(headers, b"", "CANCEL", invite.uri), branch.peer)

    def hang_up_branch(self, call: Call, branch_id: int, response: Response) -> None:
        """A phone answered a branch we no longer want: ACK its 2xx, then BYE it."""
        branch = call.branches.get(branch_id)
        if branch is None or branch.peer is None:
            return
        contact = response.headers.get("Contact")
        target = parse_name_addr(contact).uri if contact else parse_uri(branch.request.uri)
        seq = branch.request.cseq.seq

        def request(method: str, cseq: int) -> Request:
            assert branch.peer is not None
            headers = Headers()
            headers.add("Via", self.our_via(branch.peer.transport))
            headers.add("Max-Forwards", "70")
            headers.add("From", branch.request.headers.get("From") or "")
            headers.add("To", response.headers.get("To") or "")
            headers.add("Call-ID", call.call_id)
            headers.add("CSeq", f"{cseq} {method}")
            return Request(headers, b"", method, str(target))

        self.layer.send(branch.peer, request("ACK", seq))
        if branch.hung_up:
            return
        branch.hung_up = True
        self.layer.client(request("BYE", seq + 1), branch.peer)
        log.info("sip hung up a stale branch call_id=%s branch=%d", call.call_id, branch_id)

    # --- in-dialog requests ------------------------------------------------------------------

    async def async_forward_ack(self, request: Request) -> None:
        """An ACK of a dialog we are in: on to the next hop, statelessly."""
        peer = await self._resolve(_next_hop(request))
        if peer is not None:
            self.layer.send(peer, self._forwarded(request, peer.transport))

    def forward_in_dialog(
        self, call: Call, request: Request, peer: Peer, key: TxKey
    ) -> Coroutine[Any, Any, None]:
        """Another request of the dialog (BYE, re-INVITE...), forwarded statefully: its server
        transaction starts now (to absorb retransmissions); the forwarding is to be run."""
        server = self.layer.server(request, peer, key)
        return self._forward_stateful(call, request, server)

    async def _forward_stateful(self, call: Call, request: Request, server: TxEntry) -> None:
        next_peer = await self._resolve(_next_hop(request))
        if next_peer is None:
            self.layer.respond(server, make_response(request, 404, to_tag=None))
            return

        def relay(message: SipMessage) -> None:
            assert isinstance(message, Response)
            if message.status != 100:
                self.layer.respond(server, relayed(message))

        def failed(why: str) -> None:
            status = 408 if why.startswith("timer") else 503
            self.layer.respond(server, make_response(request, status, to_tag=None))

        self.layer.client(self._forwarded(request, next_peer.transport), next_peer, relay, failed)
        if request.method == "BYE":
            from_caller = request.from_.tag == call.invite.from_.tag
            self.feed(call, calls.Bye(from_caller))
