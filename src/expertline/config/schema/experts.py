"""The ``experts`` section: employees reachable by IM and phone."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from expertline.config.schema.attributes import ATTRIBUTE_NAME_PATTERN
from expertline.config.schema.fields import Locale, ObjectId, StrictModel
from expertline.limits import LABEL

Phone = Annotated[str, Field(min_length=1, max_length=LABEL.max_chars, pattern=r"^\S+$")]
MAX_OTHER_PHONES = 20


class Expert(StrictModel):
    """An employee reachable by IM and phone."""

    id: ObjectId = Field(description="Stable identifier (used in the API and in reports).")
    name: str = Field(min_length=1, max_length=255, description="Display name.")
    phone: Phone = Field(
        description="The label returned when the expert accepts: a SIP URI or a phone number.",
    )
    phones: list[Phone] = Field(
        default_factory=list,
        max_length=MAX_OTHER_PHONES,
        description="Other numbers (at most 20) the expert may ask for when accepting an "
        "offer (`yes 4821 +15551234567` over IM, `{phone}` over REST); any other number is "
        "refused unless the queue's `accept_phones` allows it.",
    )
    im: str | None = Field(
        default=None,
        pattern=r"^[^@/\s]+@[^@/\s]+$",
        description="IM address (XMPP bare JID) offers are sent to and presence is read from.",
    )
    attributes: dict[Annotated[str, Field(pattern=ATTRIBUTE_NAME_PATTERN)], Any] = Field(
        default_factory=dict,
        description="Attribute values by attribute name. Absent attributes default to: "
        "proficiency 0, boolean false, list [], number 0, string empty.",
    )
    max_tasks: int = Field(default=1, ge=1, le=100, strict=True, description="Concurrent tasks.")
    may_decline: bool = Field(
        default=True,
        strict=True,
        description="false: the expert gets no offer question; the task is assigned directly.",
    )
    locale: Locale = Field(default="en", description="Language of the IM texts.")
    enabled: bool = Field(default=True, strict=True, description="false: never offered anything.")
    presence_source: ObjectId | None = Field(
        default=None,
        description="The presence source that tracks this expert (default: the first one).",
    )
