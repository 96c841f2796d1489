"""The whole configuration document: its sections in order, and lookups across them."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from pydantic import BaseModel, Field

from expertline.config.schema.attributes import Attribute
from expertline.config.schema.experts import Expert
from expertline.config.schema.fields import Locale, StrictModel
from expertline.config.schema.messages import DEFAULT_MESSAGES, MessageSet
from expertline.config.schema.presence import PresenceSource
from expertline.config.schema.queues import EntryPoint, Queue

SECTIONS: tuple[str, ...] = (
    "attributes",
    "experts",
    "queues",
    "entry_points",
    "presence",
    "messages",
)


class ConfigDocument(StrictModel):
    """A whole configuration. Order of objects is kept (it is the export order)."""

    attributes: list[Attribute] = Field(default_factory=list, description="Matching attributes.")
    experts: list[Expert] = Field(default_factory=list, description="Experts.")
    queues: list[Queue] = Field(default_factory=list, description="Assignment queues.")
    entry_points: list[EntryPoint] = Field(
        default_factory=list, description="Dialed numbers -> queues."
    )
    presence: list[PresenceSource] = Field(default_factory=list, description="Presence sources.")
    messages: dict[Locale, MessageSet] = Field(
        default_factory=dict, description="IM texts by locale (built-in defaults for en, es)."
    )

    # By-id maps. Documents are treated as immutable once validated; build a new one to change.
    @cached_property
    def attribute_map(self) -> dict[str, Attribute]:
        return {a.name: a for a in self.attributes}

    @cached_property
    def expert_map(self) -> dict[str, Expert]:
        return {e.id: e for e in self.experts}

    @cached_property
    def queue_map(self) -> dict[str, Queue]:
        return {q.id: q for q in self.queues}

    @cached_property
    def entry_point_map(self) -> dict[str, EntryPoint]:
        return {e.dialed_number: e for e in self.entry_points}

    @cached_property
    def presence_map(self) -> dict[str, PresenceSource]:
        return {p.id: p for p in self.presence}

    def expert_attributes(self, expert: Expert) -> dict[str, Any]:
        """Every declared attribute's value for this expert, defaults filled in."""
        values = {a.name: a.default_value() for a in self.attributes}
        values.update(expert.attributes)
        return values

    def message(self, locale: str, key: str) -> str:
        """The text for ``key`` in ``locale``: configured, then built-in, then English."""
        if key not in MessageSet.PLACEHOLDERS:
            raise KeyError(key)
        for loc in dict.fromkeys((locale, locale.split("-")[0], "en")):
            configured = self.messages.get(loc)
            if configured is not None and getattr(configured, key) is not None:
                return str(getattr(configured, key))
            builtin = DEFAULT_MESSAGES.get(loc, {}).get(key)
            if builtin is not None:
                return builtin
        return DEFAULT_MESSAGES["en"][key]


def object_id(kind: str, obj: BaseModel) -> str:
    """The identifier of an object of a section (``attributes`` are named, entry points keyed)."""
    if kind == "attributes":
        return str(obj.name)  # type: ignore[attr-defined]
    if kind == "entry_points":
        return str(obj.dialed_number)  # type: ignore[attr-defined]
    return str(obj.id)  # type: ignore[attr-defined]
