"""Attribute declarations for eligibility tests: what the index reads of an attribute."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attr:
    """An attribute as the eligibility index sees it (name and declared type)."""

    name: str
    type: str


# A skills-and-facts set covering every attribute type.
SKILL_ATTRS = [
    Attr("billing", "proficiency"),
    Attr("tech", "proficiency"),
    Attr("rating", "number"),
    Attr("certified", "boolean"),
    Attr("region", "string"),
    Attr("language", "list"),
]
