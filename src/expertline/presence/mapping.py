"""From XMPP presence to routing presence, with no I/O.

``StatusMap`` turns one resource's XMPP ``<show/>`` into available / away / dnd / offline
through the source's ``status_map``. ``RosterPresence`` keeps every resource of every contact
and answers with the contact's *aggregate*: an expert signed in on several devices counts as
their most available resource (available > away > dnd > offline), so a phone left on ``away``
does not hide a desktop that says ``online``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from expertline.routing.model import Presence

# XMPP has no <show/> for plain "online"; the status_map names that case "online".
ONLINE: Final = "online"
XMPP_SHOWS: Final = frozenset({"chat", ONLINE, "away", "xa", "dnd"})
DEFAULT_STATUS_MAP: Final[dict[str, list[str]]] = {
    Presence.AVAILABLE: ["chat", ONLINE],
    Presence.AWAY: ["away", "xa"],
    Presence.DND: ["dnd"],
}
# The presences a status_map names (offline is the absence of any resource).
MAPPED: Final = (Presence.AVAILABLE, Presence.AWAY, Presence.DND)
RANK: Final[dict[Presence, int]] = {
    Presence.AVAILABLE: 3,
    Presence.AWAY: 2,
    Presence.DND: 1,
    Presence.OFFLINE: 0,
}


class StatusMapError(ValueError):
    """A status_map that names an unknown routing status or XMPP show, or maps one twice."""


@dataclass(frozen=True)
class StatusMap:
    """XMPP show value -> routing presence. Shows the map does not name count as ``away``:
    an unknown state must never make an expert receive offers."""

    by_show: Mapping[str, Presence]

    @classmethod
    def parse(cls, raw: Mapping[str, Iterable[str]] | None) -> StatusMap:
        raw = DEFAULT_STATUS_MAP if raw is None else raw
        by_show: dict[str, Presence] = {}
        for status, shows in raw.items():
            if status not in MAPPED:
                raise StatusMapError(f"status_map.{status}: expected available, away or dnd")
            for show in shows:
                if show not in XMPP_SHOWS:
                    raise StatusMapError(
                        f"status_map.{status}: unknown XMPP show {show!r}; "
                        f"expected one of {', '.join(sorted(XMPP_SHOWS))}"
                    )
                if show in by_show and by_show[show] != status:
                    raise StatusMapError(
                        f"status_map.{status}: {show!r} is already mapped to {by_show[show]}"
                    )
                by_show[show] = Presence(status)
        return cls(by_show)

    @classmethod
    def lenient(cls, raw: Mapping[str, Iterable[str]]) -> StatusMap:
        """Like ``parse`` but skips show values XMPP does not have (they can never match)."""
        cleaned = {status: [s for s in shows if s in XMPP_SHOWS] for status, shows in raw.items()}
        return cls.parse(cleaned)

    def map(self, show: str | None) -> Presence:
        """``show`` is the resource's <show/> ('' or None = plain online)."""
        return self.by_show.get(show or ONLINE, Presence.AWAY)


def most_available(statuses: Iterable[Presence]) -> Presence:
    best = Presence.OFFLINE
    for status in statuses:
        if RANK[status] > RANK[best]:
            best = status
    return best


@dataclass
class RosterPresence:
    """Every resource's mapped status per bare JID; reports aggregate changes only."""

    status_map: StatusMap
    _resources: dict[str, dict[str, Presence]] = field(default_factory=dict)

    def update(
        self, bare: str, resource: str, show: str | None, available: bool
    ) -> Presence | None:
        """Record one presence stanza; return the new aggregate if it changed, else None."""
        before = self.aggregate(bare)
        resources = self._resources.setdefault(bare, {})
        if available:
            resources[resource] = self.status_map.map(show)
        else:
            resources.pop(resource, None)
            if not resources:
                del self._resources[bare]
        after = self.aggregate(bare)
        return after if after != before else None

    def contact_gone(self, bare: str) -> Presence | None:
        """Every resource of ``bare`` is gone (unsubscribed, removed from the roster)."""
        before = self.aggregate(bare)
        self._resources.pop(bare, None)
        return Presence.OFFLINE if before != Presence.OFFLINE else None

    def aggregate(self, bare: str) -> Presence:
        return most_available(self._resources.get(bare, {}).values())

    def resources(self, bare: str) -> dict[str, Presence]:
        return dict(self._resources.get(bare, {}))

    def online(self) -> list[str]:
        """Bare JIDs with at least one resource signed in."""
        return list(self._resources)

    def clear(self) -> list[str]:
        """Forget everything (the link is down); returns the JIDs that were not offline."""
        gone = list(self._resources)
        self._resources.clear()
        return gone
