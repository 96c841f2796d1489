"""One source per fact: presence values, disposition codes and attribute value rules are
written once and every part reads them from there."""

from __future__ import annotations

import math

from expertline.config.schema import StatusMap
from expertline.limits import PROFICIENCY_MAX, PROFICIENCY_MIN, is_attribute_number, is_proficiency
from expertline.presence.mapping import RANK, most_available
from expertline.routing.model import Presence
from expertline.routing.records import DELIVERY_FAILURES, Disposition
from expertline.routing.state import PRESENCES
from expertline.runtime.http import PresenceBody
from expertline.web.console import PRESENCE, PRESENCE_LABELS


def test_every_part_knows_the_same_presence_values() -> None:
    values = {"available", "away", "dnd", "offline"}
    assert {p.value for p in Presence} == values
    assert set(PRESENCES) == values  # routing
    assert set(RANK) == values  # XMPP aggregation
    assert set(PRESENCE) == set(PRESENCE_LABELS) == values  # the expert console
    schema = PresenceBody.model_json_schema()
    assert set(schema["$defs"]["Presence"]["enum"]) == values  # the REST API
    assert most_available([]) is Presence.OFFLINE
    assert StatusMap().status_of("xa") is Presence.AWAY


def test_presence_given_as_text_is_the_same_value() -> None:
    assert PresenceBody(status="dnd").status is Presence.DND  # type: ignore[arg-type]
    assert Presence("available") == "available"


def test_dispositions_are_named_codes() -> None:
    assert Disposition.HANDLED_VOICE == 13 and Disposition.HANDLED_CHAT == 38
    assert {19, 8} == DELIVERY_FAILURES
    assert {int(d) for d in Disposition} == {2, 3, 8, 12, 13, 15, 19, 22, 27, 36, 37, 38, 41}


def test_attribute_value_rules() -> None:
    assert (PROFICIENCY_MIN, PROFICIENCY_MAX) == (1, 100)
    assert is_proficiency(1) and is_proficiency(100)
    assert not any(is_proficiency(v) for v in (0, 101, True, 50.0, "50", None))
    assert is_attribute_number(0) and is_attribute_number(-2.5)
    assert not any(is_attribute_number(v) for v in (math.nan, math.inf, -math.inf, True, "1"))
