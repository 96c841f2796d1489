"""Offers over IM, a part of ``XmppSource`` (the ``ExpertChannel`` side of a presence
source): offer, withdrawal, acceptance and notice texts out to an expert's bare JID, and
answers in, counted only from the bare JID the offers went to (``protocol`` decides).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace

from slixmpp import JID
from slixmpp.stanza import Message

from expertline.presence.protocol import (
    SILENT_WITHDRAWALS,
    Accept,
    Decline,
    Say,
    Unclear,
    answer_outcome,
    decide,
    parse_reply,
    render_accepted,
    render_offer,
    render_withdrawn,
)
from expertline.presence.xmpp_stream import SourceBase, bare
from expertline.routing.model import ExpertSpec
from expertline.runtime.ports import OfferView

log = logging.getLogger("expertline.presence.xmpp")

RECENT_OFFERS = 20  # per expert, to tell a late answer from an unknown code


class ImChannel(SourceBase):
    """Offers out and answers in: ``XmppSource`` is one."""

    def reaches(self, expert: ExpertSpec) -> bool:
        return expert.im is not None and bare(expert.im) in self._served

    async def async_offer(self, offer: OfferView) -> None:
        expert = self._port.expert(offer.expert_id)
        if expert is None or expert.im is None:
            log.warning("offer not sent offer=%s expert=%s reason=no-im", offer.id, offer.expert_id)
            return
        recent = self._sent.setdefault(expert.id, {})
        recent[offer.code] = offer
        while len(recent) > RECENT_OFFERS:
            del recent[next(iter(recent))]
        messages = self._directory.messages(expert.locale)
        text = render_offer(
            offer, messages, self._clock(), self._directory.show_rules(offer.queue_id)
        )
        self._send(expert.im, text, f"offer={offer.id} code={offer.code}")

    async def async_withdrawn(self, offer: OfferView, reason: str) -> None:
        expert = self._port.expert(offer.expert_id)
        if expert is None or expert.im is None or reason in SILENT_WITHDRAWALS:
            return
        text = render_withdrawn(offer, reason, self._directory.messages(expert.locale))
        self._send(expert.im, text, f"withdrawn={offer.id} reason={reason}")

    async def async_accepted(self, offer: OfferView) -> None:
        expert = self._port.expert(offer.expert_id)
        if expert is None or expert.im is None:
            return
        text = render_accepted(offer, self._directory.messages(expert.locale))
        self._send(expert.im, text, f"accepted={offer.id}")

    async def async_notice(self, expert: ExpertSpec, message: str, count: int = 0) -> None:
        if expert.im is None:
            return
        messages = self._directory.messages(expert.locale)
        text = messages.render(message, count=count) if message in messages.templates else message
        self._send(expert.im, text, f"notice={message}")

    def _send(self, to: str, text: str, what: str) -> None:
        client = self._client
        if client is None or not self._link.up:
            log.warning("im not sent source=%s to=%s %s reason=link-down", self.id, to, what)
            return
        mfrom = JID(self.address) if self.settings.mode == "component" else None
        client.send_message(mto=JID(to), mbody=text, mtype="chat", mfrom=mfrom)
        log.info("im sent source=%s to=%s %s", self.id, to, what)

    async def _on_message(self, msg: Message) -> None:
        if msg["type"] not in ("chat", "normal"):
            return
        body = msg["body"]
        if not body:
            return  # chat states, receipts
        sender = msg["from"].bare.lower()
        expert = self._served.get(sender)
        if expert is None or expert.im is None or bare(expert.im) != sender:
            log.info("im ignored source=%s from=%s reason=not-an-expert", self.id, sender)
            return
        if not self._port.running:
            # The standby of an HA pair: the server may hand it a copy of an answer sent to
            # the router's bare JID; the active node's session answers it.
            log.info("im ignored source=%s from=%s reason=runtime-not-running", self.id, sender)
            return
        known = self._port.expert(expert.id)
        if known is None:
            return
        messages = self._directory.messages(known.locale)
        reply = parse_reply(body)
        offers = self._port.open_offers(known.id)
        open_ids = {o.id for o in offers}
        offers += [
            replace(o, status="closed")
            for o in self._sent.get(known.id, {}).values()
            if o.id not in open_ids
        ]
        decision = decide(
            reply,
            offers,
            messages,
            presence=self.presence_of(known.id),
            tasks=self._tasks_of(known.id),
        )
        unclear = isinstance(decision, Say) and isinstance(reply, Unclear)
        if unclear and not self._budget.allow(sender, time.monotonic()):
            log.info(
                "im reply held back source=%s expert=%s reason=reply-budget", self.id, known.id
            )
            return
        if isinstance(decision, Say):
            log.info(
                "im answer source=%s expert=%s reply=%s decision=say",
                self.id,
                known.id,
                type(reply).__name__,
            )
            self._send(sender, decision.text, "reply")
            return
        if isinstance(decision, Accept):
            result = await self._port.async_accept(decision.offer_id, decision.phone)
        else:
            assert isinstance(decision, Decline)
            result = await self._port.async_decline(decision.offer_id)
        log.info(
            "im answer source=%s expert=%s decision=%s offer=%s ok=%s reason=%s",
            self.id,
            known.id,
            type(decision).__name__.lower(),
            decision.offer_id,
            result.ok,
            result.reason or "-",
        )
        line = answer_outcome(decision, result, messages)
        if line:
            self._send(sender, line, "answer-outcome")

    def _tasks_of(self, expert_id: str) -> int | str:
        with contextlib.suppress(Exception):
            state = self._port.expert_state(expert_id)
            if state is not None:
                return len(state.get("active_tasks") or [])
        return "unknown"
