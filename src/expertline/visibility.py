"""Attribute visibility: the queue's ``show`` rules (visible / masked / hidden), one definition
for every surface that shows a task to an expert (REST offers and tasks, IM texts, a console).

The caller's number is ruled by the key ``caller`` and, unlike attributes, is shown unless
the queue lists it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

Visibility = Literal["visible", "masked", "hidden"]  # one rule of a queue's ``show``
Unlisted = Literal["visible", "hidden"]


def mask(value: str) -> str:
    """Keep the last 4 characters; shorter values are hidden whole. Masking twice is a no-op."""
    tail = value[-4:] if len(value) > 4 else ""
    return "****" + tail


def as_text(value: Any) -> str:
    """An attribute value as a person reads it: lists joined, booleans as yes/no."""
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def show_caller(caller: str | None, rules: Mapping[str, str]) -> str | None:
    """The caller as an expert may see it: None when hidden (or unknown), masked, or whole."""
    rule = rules.get("caller", "visible")
    if caller is None or rule == "hidden":
        return None
    return mask(caller) if rule == "masked" else caller


def apply_show(
    values: Mapping[str, Any], rules: Mapping[str, str], unlisted: Unlisted = "hidden"
) -> dict[str, str]:
    """Attributes as an offer may show them: hidden ones dropped, masked ones masked.

    The configuration's rule is that attributes a queue's ``show`` does not list are hidden;
    ``unlisted="visible"`` is for values that already went through that filter."""
    shown: dict[str, str] = {}
    for name, value in values.items():
        rule = rules.get(name, unlisted)
        if rule == "hidden" or value is None:
            continue
        text = as_text(value)
        shown[name] = mask(text) if rule == "masked" else text
    return shown
