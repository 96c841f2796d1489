"""The XMPP source against a real Prosody: presence, roster, offers and answers, reconnect."""

from __future__ import annotations

import logging

import pytest

from support.wait import async_eventually
from support.xmpp_clients import Lab, make_offer

pytestmark = pytest.mark.prosody


async def test_presence_follows_the_expert_and_the_most_available_device(lab: Lab) -> None:
    lab.add_expert("alice")
    source = await lab.source()
    await async_eventually(lambda: source.up, timeout=10)
    assert source.health.components()[0].up  # type: ignore[attr-defined]
    phone = await lab.sign_in("alice", resource="phone", show="away")
    await async_eventually(lambda: lab.port.presence.get("alice") == "away", timeout=10)
    desk = await lab.sign_in("alice", resource="desk")
    await async_eventually(lambda: lab.port.presence.get("alice") == "available")
    phone.set_show("dnd")  # the desk still says online
    desk.set_show("xa")
    await async_eventually(lambda: lab.port.presence.get("alice") == "away")  # away beats dnd
    await desk.disconnect()
    await async_eventually(lambda: lab.port.presence.get("alice") == "dnd")
    await phone.disconnect()
    await async_eventually(lambda: lab.port.presence.get("alice") == "offline")


async def test_offer_answer_from_the_expert_counts_and_from_others_not(lab: Lab) -> None:
    lab.add_expert("alice")
    lab.add_expert("mallory")
    source = await lab.source()
    alice = await lab.sign_in("alice")
    mallory = await lab.sign_in("mallory")
    await async_eventually(lambda: lab.port.presence.get("alice") == "available", timeout=10)
    offer = make_offer("alice", lab.port)
    await source.async_offer(offer)
    got = await alice.wait_for(rf"^Offer #{offer.code}: Billing call from \+15551230000")
    assert got.sender == source.address
    mallory.say(source.address, f"yes {offer.code}")  # not hers: changes nothing
    line = await mallory.wait_for("No open offer")
    assert offer.code in line.body
    alice.say(source.address, f"yes #{offer.code} +15559990000")
    await async_eventually(lambda: lab.port.answers == [(offer.id, "accept", "+15559990000")])
    alice.say(source.address, f"yes {offer.code}")  # late: clear line, nothing changes
    await alice.wait_for(rf"#{offer.code} is no longer open")
    await source.async_accepted(lab.port.offers[offer.id])
    await alice.wait_for(rf"^Accepted #{offer.code}:")


async def test_a_standby_leaves_answers_to_the_active_node(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    """On an HA standby the runtime is not running: an answer reaching its session (a copy
    of one sent to the router's bare JID) gets no reply and changes nothing."""
    caplog.set_level(logging.INFO, logger="expertline.presence")
    lab.add_expert("olga")
    source = await lab.source()
    olga = await lab.sign_in("olga")
    await async_eventually(lambda: lab.port.presence.get("olga") == "available", timeout=10)
    offer = make_offer("olga", lab.port)
    await source.async_offer(offer)
    await olga.wait_for(rf"^Offer #{offer.code}")
    lab.port.running = False
    olga.say(source.address, f"yes {offer.code}")
    olga.say(source.address, "status")

    def ignored() -> int:
        return sum("reason=runtime-not-running" in r.getMessage() for r in caplog.records)

    await async_eventually(lambda: ignored() == 2, timeout=10)
    lab.port.running = True
    olga.say(source.address, "status")
    await olga.wait_for(r"^You are available", timeout=10)
    assert len(olga.received) == 2  # the offer, then the one status asked while active
    assert lab.port.answers == []


async def test_several_offers_need_the_code_and_commands_answer(lab: Lab) -> None:
    lab.add_expert("bob")
    source = await lab.source()
    bob = await lab.sign_in("bob")
    await async_eventually(lambda: lab.port.presence.get("bob") == "available", timeout=10)
    first, second = make_offer("bob", lab.port), make_offer("bob", lab.port)
    await source.async_offer(first)
    await source.async_offer(second)
    await bob.wait_for(rf"^Offer #{second.code}")
    bob.say(source.address, "yes")
    await bob.wait_for(rf"Several offers are open \(#{first.code}, #{second.code}\)")
    bob.say(source.address, f"no {second.code}")
    await bob.wait_for(rf"^Declined #{second.code}")
    bob.say(source.address, "status")
    await bob.wait_for(rf"You are available; open offers: #{first.code}")
    bob.say(source.address, "what is this")
    await bob.wait_for("Answer an offer with yes or no")
    assert lab.port.answers == [(second.id, "decline", None)]
    await source.async_withdrawn(first, "taken")
    await bob.wait_for(rf"^Withdrawn #{first.code}: another expert took it")


async def test_roster_follows_the_configuration(lab: Lab) -> None:
    lab.add_expert("carol")
    source = await lab.source()
    await lab.sign_in("carol")
    await async_eventually(lambda: lab.port.presence.get("carol") == "available", timeout=10)
    lab.add_expert("dave")
    dave = await lab.sign_in("dave")
    lab.port.version += 1  # dave added
    await async_eventually(lambda: lab.port.presence.get("dave") == "available", timeout=10)
    assert source.reaches(lab.port.experts["dave"])
    del lab.port.experts["carol"]
    lab.port.version += 1  # carol removed: out of the roster, told offline once
    await async_eventually(lambda: lab.port.presence.get("carol") == "offline")
    assert dave.client is not None
    roster = source._client.client_roster  # type: ignore[union-attr]
    await async_eventually(lambda: "carol@example.test" not in [str(j) for j in roster])


async def test_link_loss_sets_experts_offline_and_reconnect_resyncs(lab: Lab) -> None:
    lab.add_expert("erin")
    source = await lab.source()
    erin = await lab.sign_in("erin")
    await async_eventually(lambda: lab.port.presence.get("erin") == "available", timeout=10)
    lab.server.stop()
    await async_eventually(lambda: lab.port.presence.get("erin") == "offline", timeout=10)
    health = source.health.components()[0]  # type: ignore[attr-defined]
    assert not health.up and "link lost" in health.detail
    lab.server.start()
    await erin.disconnect()
    erin = await lab.sign_in("erin")  # the expert's client comes back too
    await async_eventually(lambda: lab.port.presence.get("erin") == "available", timeout=15)
    assert source.connections == 2
    assert source.health.components()[0].up  # type: ignore[attr-defined]
    offer = make_offer("erin", lab.port)
    await source.async_offer(offer)
    await erin.wait_for(rf"^Offer #{offer.code}")


async def test_wrong_password_is_reported_and_retried_with_backoff(lab: Lab) -> None:
    source = await lab.source(secret="wrong")
    await async_eventually(
        lambda: "auth_failed" in source.health.components()[0].detail,
        timeout=10,  # type: ignore[attr-defined]
    )
    assert not source.up


async def test_component_mode_presence_and_offers(lab: Lab) -> None:
    lab.add_expert("frank")
    frank = await lab.sign_in("frank")
    source = await lab.source(
        mode="component",
        jid=lab.server.component,
        secret=lab.server.component_secret,
        port=lab.server.component_port,
    )
    await async_eventually(lambda: source.up, timeout=10)
    await async_eventually(lambda: lab.port.presence.get("frank") == "available", timeout=10)
    frank.set_show("dnd")
    await async_eventually(lambda: lab.port.presence.get("frank") == "dnd")
    offer = make_offer("frank", lab.port)
    await source.async_offer(offer)
    got = await frank.wait_for(rf"^Offer #{offer.code}")
    assert got.sender == lab.server.component
    frank.say(lab.server.component, "y")
    await async_eventually(lambda: lab.port.answers == [(offer.id, "accept", None)])
    lab.server.restart()  # the link is cut and comes back: presence is resynced
    await async_eventually(lambda: lab.port.presence.get("frank") == "offline", timeout=10)
    await frank.disconnect()
    frank = await lab.sign_in("frank", show="away")
    await async_eventually(lambda: lab.port.presence.get("frank") == "away", timeout=15)
    assert source.connections == 2


async def test_experts_who_may_not_decline_get_a_notice(lab: Lab) -> None:
    lab.add_expert("gina", may_decline=False)
    source = await lab.source()
    gina = await lab.sign_in("gina")
    await async_eventually(lambda: lab.port.presence.get("gina") == "available", timeout=10)
    notice = make_offer("gina", lab.port, notice_only=True)
    await source.async_offer(notice)
    got = await gina.wait_for(rf"^Offer #{notice.code}:")
    assert "no reply needed" in got.body and "Reply yes or no" not in got.body
    gina.say(source.address, f"no {notice.code}")
    await gina.wait_for(rf"#{notice.code} cannot be declined")
    await source.async_notice(lab.port.experts["gina"], "set_away", 3)
    await gina.wait_for("You missed 3 offers in a row")
    await source.async_notice(lab.port.experts["gina"], "phone_failed", 4)
    await gina.wait_for("Calls to your phone failed 4 times in a row")
    assert lab.port.answers == []


async def test_a_timed_out_offer_offered_again_at_once_is_not_announced(lab: Lab) -> None:
    lab.add_expert("hank")
    source = await lab.source()
    hank = await lab.sign_in("hank")
    await async_eventually(lambda: lab.port.presence.get("hank") == "available", timeout=10)
    first = make_offer("hank", lab.port)
    await source.async_offer(first)
    await hank.wait_for(rf"^Offer #{first.code}:")
    await source.async_withdrawn(first, "reoffered")
    await source.async_offer(make_offer("hank", lab.port, id="o-again", code=first.code))
    await async_eventually(lambda: len(hank.received) == 2)
    assert [r.body.split(":")[0] for r in hank.received] == [f"Offer #{first.code}"] * 2


async def test_presence_the_runtime_refused_is_told_again_with_backoff(lab: Lab) -> None:
    lab.add_expert("hank")
    source = await lab.source()
    await async_eventually(lambda: source.up, timeout=10)
    await async_eventually(lambda: lab.port.presence.get("hank") == "offline")
    lab.port.refuse_presence = 3  # e.g. a standby runtime that becomes active later
    await lab.sign_in("hank")
    await async_eventually(lambda: lab.port.presence.get("hank") == "available", timeout=15)
    assert lab.port.refuse_presence == 0


async def test_a_standby_keeps_presence_quietly_until_its_runtime_starts(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    lab.add_expert("stan")
    source = await lab.source()
    stan = await lab.sign_in("stan")
    await async_eventually(lambda: lab.port.presence.get("stan") == "available", timeout=10)
    lab.port.running = False  # this node lost the lease: the standby now
    stan.set_show("away")
    await async_eventually(lambda: source.presence_of("stan") == "away", timeout=10)
    assert lab.port.presence["stan"] == "available"  # nobody to tell while standby
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    lab.port.running = True  # the node took over; its runtime's start asks for a resync
    source.resync_presence()
    await async_eventually(lambda: lab.port.presence.get("stan") == "away", timeout=2)


async def test_a_resync_tells_presence_at_once_even_during_a_backoff(lab: Lab) -> None:
    """A standby's source keeps being refused; when its runtime starts (an HA takeover) it
    asks for a resync, which does not wait for the backoff to end."""
    lab.add_expert("hugo")
    source = await lab.source()
    await async_eventually(lambda: source.up, timeout=10)
    lab.port.refuse_presence = 1000  # the standby's runtime is not running
    await lab.sign_in("hugo")
    await async_eventually(lambda: lab.port.refuse_presence <= 996, timeout=15)  # backoff >= 4 s
    lab.port.refuse_presence = 0
    source.resync_presence()
    await async_eventually(lambda: lab.port.presence.get("hugo") == "available", timeout=2)


async def test_an_auto_responder_gets_a_few_help_lines_not_a_loop(lab: Lab) -> None:
    lab.add_expert("ivan")
    source = await lab.source()
    ivan = await lab.sign_in("ivan")
    await async_eventually(lambda: lab.port.presence.get("ivan") == "available", timeout=10)
    for _ in range(6):
        ivan.say(source.address, "I am out of the office until Monday.")
    ivan.say(source.address, "status")  # commands still answered
    await ivan.wait_for("You are available")
    helps = [b for b in ivan.bodies() if b.startswith("Answer an offer with yes or no")]
    assert len(helps) == 3
