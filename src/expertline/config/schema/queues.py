"""The ``queues`` section, where tasks wait and how offers go out, and the ``entry_points``
that send tasks to them."""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from expertline.config.durations import Duration
from expertline.config.schema.fields import ID_PATTERN, ObjectId, StrictModel
from expertline.errors import clip
from expertline.routing.model import MAX_TASK_LIFETIME, Order, SipMode
from expertline.visibility import Visibility


class OnMaxWait(StrictModel):
    """What happens at max wait: overflow to a queue, route to a label, or reject.

    Written ``reject``, ``{overflow: QUEUE}`` or ``{label: LABEL}``.
    """

    overflow: ObjectId | None = Field(default=None, description="Queue to move the task to.")
    label: str | None = Field(
        default=None, min_length=1, max_length=255, pattern=r"^\S+$", description="Fallback label."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_word(cls, value: Any) -> Any:
        if value == "reject" or value is None:
            return {}
        if isinstance(value, str):
            raise ValueError(
                f"expected reject, {{overflow: QUEUE}} or {{label: LABEL}}, got {clip(value)}"
            )
        return value

    @model_validator(mode="after")
    def _one(self) -> OnMaxWait:
        if self.overflow is not None and self.label is not None:
            raise ValueError("give either overflow or label, not both")
        return self

    @model_serializer(mode="plain")
    def _dump(self) -> str | dict[str, str]:
        if self.overflow is not None:
            return {"overflow": self.overflow}
        if self.label is not None:
            return {"label": self.label}
        return "reject"

    @property
    def kind(self) -> Literal["overflow", "label", "reject"]:
        if self.overflow is not None:
            return "overflow"
        return "label" if self.label is not None else "reject"


def _offer_to(value: Any) -> Any:
    if value == "all":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1000:
        return value
    raise ValueError(f"expected a number of experts from 1 to 1000, or all; got {clip(value)}")


OfferTo = Annotated[
    int | Literal["all"],
    BeforeValidator(_offer_to),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer", "minimum": 1, "maximum": 1000}, {"const": "all"}],
            "description": "Experts offered at once: 1 = one by one, N = broadcast, all.",
        }
    ),
]


_ON_MAX_WAIT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"const": "reject"},
        {
            "type": "object",
            "properties": {"overflow": {"type": "string", "pattern": ID_PATTERN}},
            "required": ["overflow"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "label": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^\S+$"}
            },
            "required": ["label"],
            "additionalProperties": False,
        },
    ],
    "description": "reject, {overflow: QUEUE} or {label: LABEL}.",
}


class Escalation(StrictModel):
    """A wider selection that applies once the task has waited ``after`` in this queue."""

    after: Duration = Field(description="Wait in this queue before this step applies.")
    select: str = Field(min_length=1, max_length=4000, description="CEL selection.")


class Queue(StrictModel):
    """Where tasks wait: which experts qualify and how offers go out."""

    id: ObjectId = Field(description="Stable identifier.")
    name: str = Field(min_length=1, max_length=255, description="Display name (in reports too).")
    select: str = Field(
        min_length=1,
        max_length=4000,
        description="CEL expression over the expert's attributes; must be boolean.",
    )
    order: Order = Field(
        default="longest_idle",
        description="How eligible experts are ranked: longest_idle, most_skilled (by `skill`), "
        "least_busy, round_robin, random, closest_match (distance between the task's numeric "
        "attributes and the expert's of the same names).",
    )
    skill: str | None = Field(
        default=None,
        description="Numeric attribute (proficiency or number) used by most_skilled and "
        "closest_match; required for most_skilled.",
    )
    offer_to: OfferTo = 1
    offer_timeout: Duration = Field(default=20.0, description="How long an offer stays open.")
    max_wait: Duration = Field(default=300.0, description="Longest wait before on_max_wait.")
    on_max_wait: Annotated[OnMaxWait, WithJsonSchema(_ON_MAX_WAIT_SCHEMA)] = Field(
        default_factory=OnMaxWait,
        description="reject (back to the routing client), {overflow: QUEUE} or {label: LABEL}.",
    )
    wrap_up: Duration = Field(default=0.0, description="Pause after each task.")
    decline_cooldown: Duration = Field(
        default=0.0,
        description="An expert who declines or ignores an offer is not offered that task "
        "again for this long.",
    )
    max_no_answer: int = Field(
        default=0,
        strict=True,
        ge=0,
        le=1000,
        description="Unanswered offers in a row that set the expert away (0 = off).",
    )
    delivery_cooldown: Duration = Field(
        default=5.0,
        description="After a failed delivery to an expert's phone (SIP proxy: no answer, busy, "
        "an error at once), that expert is not offered or called for that task again for this "
        "long; other experts are tried first.",
    )
    max_delivery_failures: int = Field(
        default=3,
        strict=True,
        ge=0,
        le=1000,
        description="Failed deliveries in a row to an expert's phone that set the expert away, "
        "with the `phone_failed` notice (0 = off). A connected call resets the count.",
    )
    ring_timeout: Duration = Field(
        default=20.0, description="SIP proxy mode: how long the expert's phone rings."
    )
    service_level: Duration = Field(
        default=20.0, description="Threshold for the service-level figures in reports."
    )
    max_task_lifetime: Duration = Field(
        default=MAX_TASK_LIFETIME,
        gt=0,
        description="A task still with its expert this long after it was created (its end "
        "never reported) ends with TCD 41 and frees the expert.",
    )
    show: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")], Visibility] = (
        Field(
            default_factory=dict,
            description="Per task attribute: visible, masked (last 4 characters) or hidden "
            "wherever an expert sees an offer (IM text, REST offer views). Unlisted attributes "
            "are hidden. The key `caller` rules the caller's number (visible unless listed).",
        )
    )
    accept_phones: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="A regular expression (Python syntax, matched against the whole number "
        "with its separators removed): numbers an expert may ask for when accepting this "
        "queue's offers besides their own `phone` and `phones`, e.g. `^\\+1\\d{10}$`. "
        "Unset: only the expert's own numbers.",
    )
    escalate: list[Escalation] = Field(
        default_factory=list,
        description="Wider selections as the wait grows, in increasing `after` order.",
    )
    priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        strict=True,
        description="Higher priority tasks are offered first.",
    )

    @field_validator("accept_phones")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return pattern

    @field_validator("escalate")
    @classmethod
    def _increasing(cls, steps: list[Escalation]) -> list[Escalation]:
        for before, after in pairwise(steps):
            if after.after <= before.after:
                raise ValueError("escalation steps must have strictly increasing `after`")
        return steps

    def selections(self) -> list[str]:
        """The selection at each escalation step: step 0 is ``select``."""
        return [self.select, *(step.select for step in self.escalate)]


class EntryPoint(StrictModel):
    """Maps a dialed number (or any route key) to a queue."""

    dialed_number: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[^\s]+$",
        description="The dialed number or route key (no spaces); unique.",
    )
    queue: ObjectId = Field(description="The queue tasks for this number go to.")
    sip_mode: SipMode | None = Field(
        default=None, description="SIP mode for this number (default: the node's --sip-mode)."
    )
    name: str | None = Field(default=None, max_length=255, description="Display name.")
