"""The roster and presence subscriptions of an XMPP presence source (a part of
``XmppSource``): whom the source serves, keeping the ``expertline`` roster group in step with
the configuration, subscription requests paced under a server's flood limit until every
expert's presence is subscribed to, and the probes that bring presence after a (re)connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from prometheus_client import Gauge
from slixmpp import JID, ClientXMPP, ComponentXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.stanza import Presence as PresenceStanza

from expertline.presence.xmpp_stream import SourceBase, bare
from expertline.routing.model import ExpertSpec

log = logging.getLogger("expertline.presence.xmpp")

ROSTER_GROUP = "expertline"
ROSTER_WINDOW = 64  # roster updates in flight at once
CONVERGE_TICK = 1.0  # seconds between looks at the roster for missing subscriptions
PROBE_ANSWER_WINDOW = 2.0  # seconds a component waits for a probe's answer before asking

UNSUBSCRIBED = Gauge(
    "expertline_presence_unsubscribed",
    "Experts of a presence source whose presence the router is not subscribed to, by reason "
    "(asked: a request is out, awaiting the expert's approval or dropped by a server rate "
    "limit, and is re-sent paced; queued: waiting for the pace to send it)",
    ["source", "reason"],
)


class RosterKeeper(SourceBase):
    """Roster and subscriptions: ``XmppSource`` is one."""

    def _probe_subscribed(self, client: ClientXMPP, jids: Sequence[str]) -> None:
        """Experts added back whose subscription never went (a shared roster keeps it): the
        server sends nothing new, so ask for their current presence. Safe: only contacts the
        roster says we are subscribed to are probed (see the component note on probes)."""
        roster = client.client_roster
        for jid in jids:
            if roster.has_jid(jid) and roster[jid]["subscription"] in ("to", "both"):
                client.send_presence(pto=JID(jid), ptype="probe")
                log.info("presence probe sent source=%s to=%s reason=added-back", self.id, jid)

    def _refresh_served(self) -> None:
        served: dict[str, ExpertSpec] = {}
        for expert in self._directory.experts(self.id):
            if expert.im:
                served[bare(expert.im)] = expert
        self._served = served
        self._jid_of = {expert.id: jid for jid, expert in served.items()}

    async def _sync_subscriptions(self, client: ClientXMPP | ComponentXMPP) -> None:
        """Subscribe to every served expert; drop roster entries of experts no longer served.

        Only a node whose runtime runs does this: the two nodes of an HA pair share the
        router's account and roster, and a standby (whose view of the configuration may be
        older) only listens."""
        if not self._port.running:
            log.info("roster left to the active node source=%s", self.id)
            return
        wanted = set(self._served)
        if isinstance(client, ComponentXMPP):
            # No roster on our side, but each expert's server keeps the subscription we hold.
            # Probe first: a probe is not a subscription stanza, so no flood limit counts it
            # (ejabberd's mod_pres_counter lets a component send 5 requests a minute), and
            # every expert still subscribed answers with their presence (available or not) at
            # once, a takeover included. Only those whose server says "unsubscribed", or says
            # nothing within PROBE_ANSWER_WINDOW, are asked (by the converger). Never a request
            # racing the probe: Prosody answers a probe that races a first subscription request
            # with "unsubscribed", which turns the expert's approval into a mere pre-approval.
            now = time.monotonic()
            fresh = sorted(j for j in wanted if j not in self._confirmed and j not in self._asked)
            for jid in fresh:
                client.send_presence(pto=JID(jid), ptype="probe", pfrom=JID(self.address))
                self._asked[jid] = (0, now + PROBE_ANSWER_WINDOW)  # asked after the window
            log.info(
                "presence probes sent source=%s experts=%d probed=%d (component)",
                self.id,
                len(wanted),
                len(fresh),
            )
            return
        roster = client.client_roster
        present = {bare(str(j)): roster[j] for j in roster}
        subscribed = 0
        gate = asyncio.Semaphore(ROSTER_WINDOW)

        async def add(jid: str) -> None:
            async with gate:
                with contextlib.suppress(IqError, IqTimeout):
                    sent = client.update_roster(
                        JID(jid),
                        name=self._served[jid].name,
                        groups=[ROSTER_GROUP],
                        timeout=self.settings.connect_timeout,
                    )
                    if sent is not None:  # None for a component, which keeps no roster
                        await sent

        missing = [
            j
            for j in sorted(wanted)
            if j not in present or ROSTER_GROUP not in present[j]["groups"]
        ]
        await asyncio.gather(*(add(j) for j in missing))  # a window of IQs in flight
        now = time.monotonic()
        for jid in sorted(wanted):
            item = present.get(jid)
            if item is None or item["subscription"] in ("none", "from"):
                if jid in self._asked:
                    continue  # already out this session: the converger re-sends it paced
                self._ask(client, jid, now)
                subscribed += 1
        if subscribed:
            self._pace_open_at = now + self.settings.subscribe_pause
        removed = 0
        for jid, item in present.items():
            if jid not in wanted and ROSTER_GROUP in item["groups"]:
                with contextlib.suppress(IqError, IqTimeout):
                    await client.del_roster_item(JID(jid))
                self._roster.contact_gone(jid)
                removed += 1
        log.info(
            "roster synced source=%s experts=%d subscribe_sent=%d removed=%d",
            self.id,
            len(wanted),
            subscribed,
            removed,
        )

    def _on_subscribed(self, stanza: PresenceStanza) -> None:
        """Component mode: an expert's server says we are subscribed (a first approval, or
        the answer to a request after a probe found none); ask for the current presence, which
        not every server sends with it (RFC 6121 leaves that to the server)."""
        client = self._client
        who = stanza["from"].bare.lower()
        if client is None or who not in self._served:
            return
        self._confirmed.add(who)
        client.send_presence(pto=JID(who), ptype="probe", pfrom=JID(self.address))
        log.debug("presence probe sent source=%s to=%s", self.id, who)

    def _on_unsubscribed(self, stanza: PresenceStanza) -> None:
        """Component mode: the expert's server says we are not subscribed (the answer to a
        probe, or the expert revoked): ask at the converger's next look, first round unpaced
        when it answers a probe, paced and backed off after that."""
        who = stanza["from"].bare.lower()
        if who not in self._served:
            return
        self._confirmed.discard(who)
        requests, due = self._asked.get(who, (0, 0.0))
        if requests == 0:
            self._asked[who] = (0, min(due, time.monotonic()))
        log.info("not subscribed source=%s expert=%s; asking", self.id, who)

    def _ask(self, client: ClientXMPP | ComponentXMPP, jid: str, now: float) -> None:
        requests = self._asked.get(jid, (0, 0.0))[0] + 1
        retry = min(
            self.settings.subscribe_pause * 2 ** (requests - 1), self.settings.subscribe_retry_cap
        )
        self._asked[jid] = (requests, now + retry)
        if isinstance(client, ComponentXMPP):
            client.send_presence_subscription(pto=JID(jid), pfrom=JID(self.address))
            client.send_presence(pto=JID(jid), pfrom=JID(self.address))
        else:
            client.send_presence_subscription(pto=JID(jid))
        self.subscribe_requests += 1

    def _missing(self, client: ClientXMPP | ComponentXMPP) -> list[str]:
        """Served experts whose presence the roster says we are not subscribed to (for a
        component, which has no roster: whose server has not said so since the session began)."""
        if isinstance(client, ComponentXMPP):
            return sorted(j for j in self._served if j not in self._confirmed)
        roster = client.client_roster
        missing = []
        for jid in self._served:
            if not roster.has_jid(jid) or roster[jid]["subscription"] not in ("to", "both"):
                missing.append(jid)
        return sorted(missing)

    async def _converge(self, client: ClientXMPP | ComponentXMPP) -> None:
        """Keep asking, paced, until every served expert's presence is subscribed to.

        The roster is the truth (the server pushes each change): an expert still without a
        ``to`` subscription is asked again when their retry is due (the pause, doubling per
        request, capped), at most ``subscribe_burst`` requests per ``subscribe_pause``, so a
        server's subscription flood limit lets them through instead of dropping them."""
        s = self.settings
        while True:
            await asyncio.sleep(CONVERGE_TICK)
            if not self._port.running:
                continue  # the active node keeps the roster
            now = time.monotonic()
            missing = self._missing(client)
            for jid in list(self._asked):
                if jid not in missing:
                    del self._asked[jid]
            # A component's first round: probed, not subscribed, asked all at once.
            probed = [j for j in missing if self._asked.get(j, (1, 0.0))[0] == 0]
            probed = [j for j in probed if self._asked[j][1] <= now]
            for jid in probed:
                self._ask(client, jid, now)
            if probed:
                self._pace_open_at = now + s.subscribe_pause
                log.info(
                    "subscriptions requested source=%s experts=%d (component, not subscribed)",
                    self.id,
                    len(probed),
                )
            elif now >= self._pace_open_at:
                due = [j for j in missing if self._asked.get(j, (0, 0.0))[1] <= now]
                due.sort(key=lambda j: (self._asked.get(j, (0, 0.0))[0], j))
                burst = due[: s.subscribe_burst]
                for jid in burst:
                    self._ask(client, jid, now)
                if burst:
                    self._pace_open_at = now + s.subscribe_pause
                    log.info(
                        "subscription requests re-sent source=%s sent=%d unsubscribed=%d "
                        "next_burst_in=%.0fs",
                        self.id,
                        len(burst),
                        len(missing),
                        s.subscribe_pause,
                    )
            self._set_unsubscribed({j: "asked" if j in self._asked else "queued" for j in missing})

    def _set_unsubscribed(self, unsubscribed: dict[str, str]) -> None:
        before = self.unsubscribed
        self.unsubscribed = unsubscribed
        for reason in ("asked", "queued"):
            UNSUBSCRIBED.labels(source=self.id, reason=reason).set(
                sum(1 for r in unsubscribed.values() if r == reason)
            )
        if unsubscribed.keys() == before.keys() or not self._link.up:
            return
        if unsubscribed:
            asked = sum(1 for r in unsubscribed.values() if r == "asked")
            detail = (
                f"connected as {self.address}; {len(self._served)} experts; "
                f"{len(unsubscribed)} not subscribed ({asked} asked, awaiting approval or "
                f"held by the server's rate limit; {len(unsubscribed) - asked} queued)"
            )
            log.info(
                "presence subscriptions missing source=%s unsubscribed=%d asked=%d queued=%d",
                self.id,
                len(unsubscribed),
                asked,
                len(unsubscribed) - asked,
            )
        else:
            detail = f"connected as {self.address}; {len(self._served)} experts; all subscribed"
            log.info(
                "presence subscriptions complete source=%s experts=%d", self.id, len(self._served)
            )
        self._report_health(True, detail)
