"""Seeded mutation fuzzing of the SIP parser behind a real SIP front: batches of mutated
requests and responses over UDP and TCP; after each batch the front still answers a valid
request, nothing it logged is a crash, and the node still routes.

Bounded: ``BATCHES`` x ``PER_BATCH`` datagrams (about 10 s for both transports). ``EXPERTLINE_FUZZ_SEED`` picks
the inputs (tests/support/mutate.py)."""

from __future__ import annotations

import logging
import random

import pytest
from sip_harness import ENTRY, SipHarness, WireClient, sip_config

from support.mutate import SEED, mutants

pytestmark = pytest.mark.fuzz

BATCHES = 40
PER_BATCH = 250
ALICE = "sip:1001@127.0.0.1:5999"  # never available: every call queues


def _samples(wire: WireClient) -> list[bytes]:
    """Valid messages of every kind the front reads: requests in and out of dialogs, and
    responses (a proxy gets them from phones)."""
    requests = [
        wire.request("INVITE"),
        wire.request("OPTIONS", uri="sip:127.0.0.1"),
        wire.request("CANCEL", cseq="1 CANCEL"),
        wire.request("BYE", cseq="2 BYE", headers={"To": f"<sip:{ENTRY}@127.0.0.1>;tag=x"}),
        wire.request("ACK", cseq="1 ACK"),
        wire.request(
            "INVITE",
            headers={
                "P-Asserted-Identity": "<sip:+15557654321@127.0.0.1>",
                "X-Expertline-Attributes": "account=12345678;customer_tier=gold",
                "Route": "<sip:127.0.0.1;lr>",
                "Record-Route": "<sip:127.0.0.1;lr>",
            },
        ),
    ]
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    with_body = (
        wire.request("INVITE").replace(
            b"Content-Length: 0", b"Content-Type: application/sdp\r\nContent-Length: %d" % len(body)
        )
        + body
    )
    response = (
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfz\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\nCall-ID: fz\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    return [*requests, with_body, response]


async def _still_answers(wire: WireClient) -> None:
    """A valid OPTIONS gets its 200 (earlier garbage may have left answers queued: skip them)."""
    wire._pull()
    wire._frames.clear()
    call_id = f"probe-{random.random()}"
    wire.send(wire.request("OPTIONS", uri="sip:127.0.0.1", call_id=call_id))
    while True:
        response = await wire.receive(timeout=5)
        if response.call_id == call_id:
            assert response.status == 200
            return


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_mutated_messages_never_crash_the_front(
    wire: SipHarness, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    await wire.start(sip_config({"alice": ALICE}))
    assert wire.front is not None
    rng = random.Random(f"{SEED}-{transport}")
    remote = ("127.0.0.1", wire.front.sip_port)
    client = WireClient(remote, "udp")
    samples = _samples(client)
    caplog.set_level(logging.INFO)
    sent = 0
    try:
        for batch in range(BATCHES):
            stream = WireClient(remote, "tcp") if transport == "tcp" else None
            for data in mutants(samples, rng, PER_BATCH):
                if stream is None:
                    client.send(data[:65000])
                else:
                    try:
                        stream.send(data)
                    except OSError:  # the front closed a stream it could not frame
                        stream.close()
                        stream = WireClient(remote, "tcp")
                sent += 1
            if stream is not None:
                stream.close()
            try:
                await _still_answers(client)
            except AssertionError as exc:
                raise AssertionError(
                    f"seed {SEED} batch {batch}: the front stopped answering"
                ) from exc
        crashes = [
            r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info is not None
        ]
        assert crashes == [], [r.getMessage() for r in crashes][:5]
        assert sent == BATCHES * PER_BATCH
        # and a clean call still becomes a queued task
        caller = WireClient(remote, "udp")
        try:
            caller.send(caller.request("INVITE", call_id="after-fuzz"))
            statuses = [(await caller.receive(timeout=10)).status for _ in range(2)]
            assert statuses == [100, 182], statuses
        finally:
            caller.close()
    finally:
        client.close()
