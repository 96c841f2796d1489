"""What a proxied call looks like on the wire, seen from hand-driven sockets on both sides:
forwarded requests keep their Via headers first (RFC 3261 §7.3.1), and each early dialog the
caller sees has one To-tag: expertline's own 182/487, and each phone's 180/200 as the phone
sent them."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest
from sip_harness import SipHarness, WireClient, sip_config

from expertline.sip.message import (
    Request,
    Response,
    make_response,
    new_branch,
    parse_message,
    parse_name_addr,
)


class PhoneSocket:
    """An expert's phone on a UDP socket: takes requests, answers what it is told to."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.uri = f"sip:1001@127.0.0.1:{self.port}"
        self.raw: list[bytes] = []

    async def receive(self, method: str, timeout: float = 5.0) -> tuple[Request, tuple[str, int]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, source = self.sock.recvfrom(65535)
            except BlockingIOError:
                await asyncio.sleep(0.005)
                continue
            message = parse_message(data)
            if isinstance(message, Request) and message.method == method:
                self.raw.append(data)
                return message, source
        raise AssertionError(f"the phone got no {method}")

    def answer(self, request: Request, to: tuple[str, int], status: int, tag: str) -> None:
        extra = [("Record-Route", rr) for rr in request.headers.get_all("Record-Route")]
        if 100 < status < 300:
            extra.append(("Contact", f"<{self.uri}>"))
        response = make_response(request, status, to_tag=tag, extra=extra)
        self.sock.sendto(response.to_bytes(), to)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def phone() -> AsyncIterator[PhoneSocket]:
    p = PhoneSocket()
    yield p
    p.close()


def header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    return [line.split(":", 1)[0].strip().lower() for line in head.split("\r\n")[1:]]


def to_tag(response: Response) -> str | None:
    return parse_name_addr(response.headers.get("To") or "").params.get("tag")


async def test_forwarded_requests_keep_their_via_headers_first(
    wire: SipHarness, phone: PhoneSocket
) -> None:
    await wire.start(sip_config({"alice": phone.uri}, may_decline=False), mode="proxy")
    await wire.available("alice")
    assert wire.front is not None
    caller = WireClient(("127.0.0.1", wire.front.sip_port))
    try:
        caller.send(caller.request("INVITE"))
        invite, front = await phone.receive("INVITE")
        phone.answer(invite, front, 200, "phoneB")
        _, ok = await caller.receive_final()
        assert ok.status == 200
        routes = ", ".join(ok.headers.get_all("Record-Route"))
        dialog = {"To": ok.headers.get("To") or "", "Route": routes}
        caller.send(caller.request("ACK", uri=phone.uri, cseq="1 ACK", headers=dialog))
        bye_headers = {**dialog, "Call-ID": ok.headers.get("Call-ID") or ""}
        caller.send(caller.request("BYE", uri=phone.uri, cseq="2 BYE", headers=bye_headers))
        await phone.receive("BYE")
    finally:
        caller.close()
    invite_raw, bye_raw = phone.raw
    for raw in (invite_raw, bye_raw):
        names = header_names(raw)
        assert names[:2] == ["via", "via"], names  # ours, then the caller's
        assert "via" not in names[2:], names


async def test_each_early_dialog_keeps_one_to_tag(wire: SipHarness, phone: PhoneSocket) -> None:
    """182 (expertline's early dialog), then the phone's 180 and 200 (its own), then a second
    call CANCELled while ringing: the 487 is expertline's answer, with expertline's tag."""
    config = sip_config({"alice": phone.uri, "bob": phone.uri})
    await wire.start(config, mode="proxy", refresh=0.3)
    await wire.available("alice")
    assert wire.front is not None
    caller = WireClient(("127.0.0.1", wire.front.sip_port))
    try:
        caller.send(caller.request("INVITE"))
        queued = [await caller.receive(), await caller.receive(), await caller.receive()]
        assert [r.status for r in queued] == [100, 182, 182]
        await wire.accept_next_offer("alice")
        invite, front = await phone.receive("INVITE")
        phone.answer(invite, front, 180, "phoneB")
        phone.answer(invite, front, 180, "phoneB")
        phone.answer(invite, front, 200, "phoneB")
        provisional, ok = await caller.receive_final()
        seen = [r for r in [*queued, ok] if r.status != 100]
        ours = {to_tag(r) for r in seen if r.status == 182}
        assert len(ours) == 1 and None not in ours
        assert to_tag(ok) == "phoneB" and 180 in provisional
        assert to_tag(queued[0]) is None  # 100 Trying makes no dialog

        branch, call_id = new_branch(), "early-2"
        caller.send(caller.request("INVITE", branch=branch, call_id=call_id))
        first = [await caller.receive(), await caller.receive()]
        await wire.available("bob")  # alice is on the first call
        await wire.accept_next_offer("bob")
        invite, front = await phone.receive("INVITE")
        phone.answer(invite, front, 180, "phoneC")
        ringing = await caller.receive()
        assert ringing.status == 180 and to_tag(ringing) == "phoneC"
        cancel = caller.request("CANCEL", branch=branch, call_id=call_id, cseq="1 CANCEL")
        caller.send(cancel)
        answers = {r.status: r for r in [await caller.receive(), await caller.receive()]}
        assert set(answers) == {200, 487}
        assert to_tag(answers[487]) == to_tag(first[1]) != "phoneC"
    finally:
        caller.close()
