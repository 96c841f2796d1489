"""What a SIP peer cannot do: join another party's task, put values into the records that do
not fit them, send duplicated or escaped headers that mean something else, or make the front
call a host nobody configured. Each case is refused where it arrives and routing goes on."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from sip_harness import ENTRY, SipHarness, WireClient, sip_config

from expertline.settings import Settings
from expertline.sip.front import create_sip_front
from expertline.sip.message import Response, new_branch, new_tag, parse_uri
from expertline.sip.trust import AttachPolicy, attach_proof, parse_networks
from expertline.web.app import AppContext
from support.wait import async_eventually

PHONE = "sip:1001@127.0.0.1:5999"
KEY = b"a shared secret of 32 bytes !!!!"


@pytest.fixture
async def started(wire: SipHarness) -> AsyncIterator[SipHarness]:
    await wire.start(sip_config({"alice": PHONE}))
    yield wire


@pytest.fixture
async def peer(wire: SipHarness) -> AsyncIterator[WireClient]:
    """A UDP peer; the harness must be started first by the test or a fixture."""
    client = WireClient(("127.0.0.1", 0))
    yield client
    client.close()


def at(h: SipHarness, client: WireClient) -> WireClient:
    assert h.front is not None
    client.remote = ("127.0.0.1", h.front.sip_port)
    return client


async def invite_queued(client: WireClient, **options: object) -> tuple[str, str]:
    """Send an INVITE that must be queued (100, 182); its (branch, Call-ID) for a CANCEL."""
    branch, call_id = new_branch(), f"edge-{new_tag()}"
    client.send(client.request(branch=branch, call_id=call_id, **options))  # type: ignore[arg-type]
    assert [(await client.receive()).status for _ in range(2)] == [100, 182]
    return branch, call_id


async def cancel(client: WireClient, branch: str, call_id: str) -> list[int]:
    """CANCEL the INVITE and acknowledge its final response; the statuses seen."""
    client.send(client.request("CANCEL", branch=branch, call_id=call_id, cseq="1 CANCEL"))
    responses = [await client.receive() for _ in range(2)]
    [final] = [r for r in responses if r.cseq.method == "INVITE"]
    to = {"To": final.headers.get("To") or ""}
    client.send(client.request("ACK", branch=branch, call_id=call_id, cseq="1 ACK", headers=to))
    return sorted(r.status for r in responses)


async def refused(client: WireClient, **options: object) -> Response:
    """Send an INVITE and return its final response (after a 100, if any), acknowledged."""
    branch, call_id = new_branch(), f"edge-{new_tag()}"
    client.send(client.request(branch=branch, call_id=call_id, **options))  # type: ignore[arg-type]
    _, final = await client.receive_final()
    to = {"To": final.headers.get("To") or ""}
    client.send(client.request("ACK", branch=branch, call_id=call_id, cseq="1 ACK", headers=to))
    return final


async def still_routes(h: SipHarness, client: WireClient) -> None:
    """A good INVITE right after is queued and gets a task: the node keeps routing."""
    assert h.port is not None
    before = len(h.port.requests)
    await invite_queued(client)
    assert len(h.port.requests) == before + 1


# --- item: a SIP call never joins another party's task ---------------------------------


async def test_an_invite_naming_an_http_tasks_external_id_cannot_cancel_it(
    started: SipHarness, peer: WireClient
) -> None:
    h, client = started, at(started, peer)
    http_task = await h.create_http_task(external_id="icm-7")
    branch, call_id = await invite_queued(client, headers={"X-Expertline-External-Id": "icm-7"})
    assert h.port is not None
    assert h.port.requests[-1].external_id == "sip:icm-7"  # its own, namespaced task
    assert await cancel(client, branch, call_id) == [200, 487]
    # The routing client's task is untouched: still waiting, and it reaches its expert.
    assert (await h.http_task(http_task["id"]))["status"] == "queued"
    await h.available("alice")
    await h.accept_next_offer("alice")
    assert (await h.http_task(http_task["id"]))["label"] == PHONE
    assert await client.silence(0.2) == []  # the SIP caller got nothing of it
    [tcd] = await h.records("tcd")  # only the SIP call's own task ended (abandoned)
    assert tcd["router_call_key"] == "sip:icm-7" and tcd["call_disposition"] == 2


async def test_a_second_invite_with_the_same_external_id_is_refused_403(
    started: SipHarness, peer: WireClient
) -> None:
    h, client = started, at(started, peer)
    first = await invite_queued(client, headers={"X-Expertline-External-Id": "icm-8"})
    final = await refused(client, headers={"X-Expertline-External-Id": "icm-8"})
    assert final.status == 403 and "external id already in use" in final.reason
    assert await h.records("tcd") == []  # the first call's task is untouched
    assert await cancel(client, *first) == [200, 487]
    assert (await h.one_tcd())["router_call_key"] == "sip:icm-8"


@pytest.mark.parametrize(
    "trusted, proof, reason",
    [
        ("127.0.0.1", "0" * 64, "attach proof does not match"),
        ("10.0.0.0/8", None, "only from trusted peers"),  # the right proof, wrong address
    ],
)
async def test_attaching_needs_a_trusted_peer_and_the_proof(
    wire: SipHarness, peer: WireClient, trusted: str, proof: str | None, reason: str
) -> None:
    await wire.start(
        sip_config({"alice": PHONE}), attach=AttachPolicy(KEY, parse_networks([trusted]))
    )
    h, client = wire, at(wire, peer)
    http_task = await h.create_http_task(external_id="icm-9")
    headers = {
        "X-Expertline-External-Id": "icm-9",
        "X-Expertline-Attach-Proof": proof or attach_proof(KEY, "icm-9"),
    }
    final = await refused(client, headers=headers)
    assert final.status == 403 and reason in final.reason
    assert (await h.http_task(http_task["id"]))["status"] == "queued"
    assert h.port is not None and h.port.requests == []
    await still_routes(h, client)


async def test_attaching_is_off_by_default(started: SipHarness, peer: WireClient) -> None:
    client = at(started, peer)
    headers = {
        "X-Expertline-External-Id": "icm-10",
        "X-Expertline-Attach-Proof": attach_proof(KEY, "icm-10"),
    }
    final = await refused(client, headers=headers)
    assert final.status == 403 and "not enabled" in final.reason


async def test_a_trusted_peer_with_the_proof_attaches_to_the_http_task(
    wire: SipHarness, peer: WireClient
) -> None:
    """Pre-routing: the routing client made the task over HTTP; the call joins it by SIP."""
    await wire.start(
        sip_config({"alice": PHONE}), attach=AttachPolicy(KEY, parse_networks(["127.0.0.0/8"]))
    )
    h, client = wire, at(wire, peer)
    http_task = await h.create_http_task(external_id="icm-11")
    headers = {
        "X-Expertline-External-Id": "icm-11",
        "X-Expertline-Attach-Proof": attach_proof(KEY, "icm-11").upper(),
    }
    await invite_queued(client, headers=headers)
    await h.available("alice")
    offer = await h.accept_next_offer("alice")
    assert offer["task_id"] == http_task["id"]
    _, final = await client.receive_final()
    assert final.status == 302 and final.headers.get("Contact") == f"<{PHONE}>"
    assert (await h.one_tcd())["router_call_key"] == "icm-11"


# --- item: values that do not fit the records are refused at the edge -------------------


LONG = "1" * 300


@pytest.mark.parametrize(
    "headers, uri, reason",
    [
        ({"From": f"<sip:{LONG}@127.0.0.1>;tag=a"}, None, "caller in From is 300 characters"),
        (
            {"P-Asserted-Identity": f"<sip:{LONG}@carrier.test>"},
            None,
            "caller in P-Asserted-Identity is 300",
        ),
        (
            {"From": "<sip:%00evil@127.0.0.1>;tag=a"},
            None,
            "caller in From: an escaped control character",
        ),
        ({"From": "<sip:%zz@127.0.0.1>;tag=a"}, None, "bad %-escape"),
        ({"X-Expertline-External-Id": "e" * 252}, None, "External-Id is 252 characters"),
        ({"X-Expertline-Priority": "5000"}, None, "Priority must be an integer from -1000"),
        ({"X-Account": "a" * 257}, None, "attributes.account: is 257 characters"),
        ({f"X-{'n' * 70}": "v"}, None, "name is 70 characters"),
        ({}, f"sip:{'9' * 129}@127.0.0.1", "dialed number is 129 characters"),
        ({}, "sip:%2B1800%01@127.0.0.1", "dialed number: an escaped control character"),
        ({}, "sip:%C3%28@127.0.0.1", "not UTF-8"),
    ],
)
async def test_values_out_of_bounds_get_400_and_routing_goes_on(
    started: SipHarness,
    peer: WireClient,
    headers: dict[str, str],
    uri: str | None,
    reason: str,
) -> None:
    client = at(started, peer)
    options: dict[str, object] = {"headers": headers}
    if uri is not None:
        options.update(uri=uri, headers={**headers, "To": f"<{uri}>"})
    final = await refused(client, **options)
    assert final.status == 400, final
    assert reason in final.reason
    assert started.port is not None and started.port.requests == []
    await still_routes(started, client)


async def test_values_at_their_bounds_fit_every_record(
    wire_any_db: SipHarness, peer: WireClient
) -> None:
    """The longest caller, external id and attribute values are stored, ended and recorded
    (on PostgreSQL too, whose columns refuse what does not fit)."""
    h = wire_any_db
    await h.start(sip_config({"alice": PHONE}))
    client = at(h, peer)
    caller = "+" + "5" * 254
    external = "x" * 251
    headers = {
        "From": f'"Ünïcode" <sip:{caller}@127.0.0.1>;tag=a',
        "X-Expertline-External-Id": external,
        "X-Notes": "n\t" * 128,
        **{f"X-A{i}": "v" for i in range(98)},
    }
    branch, call_id = await invite_queued(client, headers=headers)
    assert await cancel(client, branch, call_id) == [200, 487]
    tcd = await h.one_tcd()
    assert tcd["ani"] == caller and tcd["router_call_key"] == "sip:" + external
    assert tcd["call_disposition"] == 2
    await still_routes(h, client)


# --- item: escaped Request-URI users and duplicated single-value headers ------------------


async def test_an_escaped_request_uri_user_is_decoded_before_the_lookup(
    started: SipHarness, peer: WireClient
) -> None:
    client = at(started, peer)
    uri = "sip:%2B1800555%30100@127.0.0.1"
    await invite_queued(client, uri=uri, headers={"To": f"<{uri}>"})
    assert started.port is not None
    assert started.port.requests[-1].entry_point == ENTRY == "+18005550100"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(
    "header, value",
    [
        ("Call-ID", "another-call"),
        ("i", "compact-form-call"),
        ("CSeq", "2 INVITE"),
        ("Content-Length", "0"),
        ("From", "<sip:+15550000000@127.0.0.1>;tag=x"),
        ("To", f"<sip:{ENTRY}@127.0.0.1>"),
        ("Max-Forwards", "69"),
    ],
)
async def test_duplicated_single_value_headers_are_400(
    started: SipHarness, transport: str, header: str, value: str
) -> None:
    assert started.front is not None
    client = WireClient(("127.0.0.1", started.front.sip_port), transport)
    try:
        raw = client.request()
        head, _, rest = raw.partition(b"\r\n")
        client.send(head + f"\r\n{header}: {value}".encode() + b"\r\n" + rest)
        response = await client.receive()
        assert response.status == 400 and "duplicate" in response.reason
        assert len(response.headers.get_all("Call-ID")) == 1
        assert started.port is not None and started.port.requests == []
        await still_routes(started, client)  # on TCP the same connection goes on
    finally:
        client.close()


# --- item: proxy mode calls only hosts it knows -----------------------------------------


@pytest.fixture
def stranger() -> AsyncIterator[socket.socket]:
    """A UDP listener on another loopback address, standing for a host nobody configured."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.2", 0))
    except OSError:
        pytest.skip("127.0.0.2 is not usable here")
    sock.setblocking(False)
    yield sock  # type: ignore[misc]
    sock.close()


def received(sock: socket.socket) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(sock.recv(65535))
        except BlockingIOError:
            return out


async def test_a_phone_on_an_unknown_host_is_not_called_and_the_task_requeued(
    wire: SipHarness, peer: WireClient, stranger: socket.socket
) -> None:
    # The queue lets experts take calls anywhere, so this front's own gate is what refuses.
    await wire.start(sip_config({"alice": PHONE}, accept_phones=r"^sip:.*$"), mode="proxy")
    h, client = wire, at(wire, peer)
    elsewhere = f"sip:666@127.0.0.2:{stranger.getsockname()[1]}"
    await invite_queued(client)
    await h.available("alice")
    offer = await h.accept_next_offer("alice", phone=elsewhere)
    [requeued] = await async_eventually(lambda: h.events("task.requeued"), timeout=5)
    assert requeued["task_id"] == offer["task_id"] and requeued["data"]["disposition"] == 19
    assert h.front is not None and h.front.stats.get("target_refused") == 1
    assert received(stranger) == []  # not one packet went there
    assert (await h.http_task(offer["task_id"]))["status"] in ("queued", "offered")
    assert await client.silence(0.2) == []  # the caller still waits, hearing nothing new


async def test_sip_targets_admit_more_hosts(
    wire: SipHarness, peer: WireClient, stranger: socket.socket
) -> None:
    await wire.start(
        sip_config({"alice": PHONE}, accept_phones=r"^sip:.*$"),
        mode="proxy",
        targets=("127.0.0.2",),
    )
    h, client = wire, at(wire, peer)
    await invite_queued(client)
    await h.available("alice")
    await h.accept_next_offer("alice", phone=f"sip:666@127.0.0.2:{stranger.getsockname()[1]}")
    [invite] = await async_eventually(lambda: received(stranger)[:1], timeout=5)
    assert invite.startswith(b"INVITE sip:666@127.0.0.2")


@pytest.mark.sipp
async def test_sipp_caller_too_long_is_400_and_the_next_call_is_routed(
    sip_any_db: SipHarness,
) -> None:
    """The caller that once made the TCD write fail at the task's end (a 300-character From):
    refused at once, nothing stored, and the next caller is routed and recorded."""
    sip = sip_any_db
    await sip.start(sip_config({"alice": PHONE}))
    bad = sip.sipp.caller("caller_bad_request", sip.remote, ENTRY, variables={"caller": LONG})
    await sip.finish(bad)
    assert "reason=Bad Request (caller in From is 300 characters" in bad.logs()
    assert sip.port is not None and sip.port.requests == []
    await sip.available("alice")
    good = sip.sipp.caller("caller_redirect", sip.remote, ENTRY)
    await sip.accept_next_offer("alice")
    await sip.finish(good)
    tcd = await sip.one_tcd()
    assert tcd["call_disposition"] == 13 and tcd["ani"] == "+15557654321"


async def test_create_sip_front_reads_the_trust_settings(started: SipHarness) -> None:
    assert started.port is not None
    settings = Settings(
        node="n1",
        sip="127.0.0.1:0",
        sip_trusted="10.0.0.0/8, 127.0.0.1",
        sip_attach_key_env="ATTACH_KEY",
        sip_targets="*.phones.test,gw.test",
        sip_refresh=45,
    )
    front = create_sip_front(
        AppContext(settings, started.engine), started.port, environ={"ATTACH_KEY": "k" * 16}
    )
    assert front.attach == AttachPolicy(b"k" * 16, parse_networks(["10.0.0.0/8", "127.0.0.1"]))
    assert front.targets.extra == ("*.phones.test", "gw.test")
    assert front.refresh == 45.0
    assert front.targets.allows_name(parse_uri(PHONE))  # the experts' phones, from the runtime
    with pytest.raises(ValueError, match="at least 16 bytes"):  # the node refuses to start
        create_sip_front(AppContext(settings, started.engine), started.port, environ={})
