"""Seeded mutation fuzzing of the IM answer parser behind the real presence source: an expert
sends batches of mutated answers over a real Prosody; after each batch ``status`` is still
answered, nothing is logged as an error, and the reply parser and the decision on every
mutant keep their promises (never raise; only a leading yes-word accepts).

Bounded: ``BATCHES`` x ``PER_BATCH`` chat messages (about 20 s). ``EXPERTLINE_FUZZ_SEED``
picks the inputs (tests/support/mutate.py)."""

from __future__ import annotations

import logging
import random

import pytest
from test_xmpp_runtime import System, system  # noqa: F401  (the fixture)

from expertline.presence.protocol import (
    YES_WORDS,
    Answer,
    Ask,
    MessageSet,
    Unclear,
    decide,
    parse_reply,
)
from support.mutate import SEED, mutants, xml_text
from support.wait import async_eventually
from support.xmpp_clients import XmppServer

pytestmark = [pytest.mark.prosody, pytest.mark.fuzz]


@pytest.fixture
def xmpp_server(prosody: XmppServer) -> XmppServer:
    """Prosody only. ejabberd's default ``c2s_shaper`` (1,000 B/s per client) delivers a
    batch of mutants over minutes, so a batch's end cannot be told from its replies and late
    mutants answer the next offer; the parser under test does not depend on the server."""
    return prosody


BATCHES = 8
PER_BATCH = 60


def _samples(code: str) -> list[bytes]:
    return [
        s.encode()
        for s in (
            f"yes {code}",
            f"no #{code}",
            f"y {code} +15557654321",
            f"accept #{code} sip:1001@pbx.example.test",
            f"decline {code}.",
            "yes",
            "n",
            "help",
            "status",
            f"Yes #{code}!",
            f"no {code} thanks",
        )
    ]


async def test_mutated_answers_never_break_the_im_channel(
    system: System,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    carol = await system.sign_in("carol")
    await async_eventually(lambda: system.presence("carol") == "available", timeout=15)
    task = await system.create_task()
    code = task["code"]
    await carol.wait_for(rf"^Offer #{code}:")
    router = carol.received[-1].sender
    rng = random.Random(f"{SEED}-im")
    samples = _samples(code)
    messages = MessageSet.build("en")
    offers = system.service.open_offers("carol")
    for batch in range(BATCHES):
        for data in mutants(samples, rng, PER_BATCH):
            text = xml_text(data).strip() or "?"
            reply = parse_reply(text)  # the parser's own promises, on the same input
            assert isinstance(reply, Answer | Ask | Unclear), text
            if isinstance(reply, Answer) and reply.accept:
                first = text.split()[0].lower()
                assert (first.rstrip(".,;:!") or first) in YES_WORDS, text
            decide(reply, offers, messages)
            carol.say(router, text)
        before = len(carol.received)
        carol.say(router, "status")

        async def answered(before: int = before) -> bool:
            return any(r.body.startswith("You are ") for r in carol.received[before:])

        try:
            await async_eventually(answered, timeout=15)
        except AssertionError as exc:
            raise AssertionError(f"seed {SEED} batch {batch}: status went unanswered") from exc
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors][:5]
    assert system.source.link_state == "online"
    # the channel still routes: with the first task over (a mutant may have accepted it),
    # a fresh task is offered and accepted by IM
    status = (await system.task(task["id"]))["status"]
    if status not in ("completed", "abandoned", "failed", "rejected", "overflowed"):
        end = "ended" if status in ("assigned", "connected") else "abandoned"
        r = await system.http.post(
            f"/api/v1/tasks/{task['id']}/events", json={"type": end}, headers=system.rc
        )
        assert r.status_code == 200, r.text
    second = await system.create_task()
    await carol.wait_for(rf"^Offer #{second['code']}:", timeout=15)
    carol.say(router, f"yes {second['code']}")
    await carol.wait_for(rf"^Accepted #{second['code']}:")
