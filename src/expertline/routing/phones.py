"""Which number an expert may take a call on when accepting an offer with another phone.

An accept may name another number (IM ``yes 4821 +15551234567``, REST ``{phone}``). In SIP
proxy mode the call is sent there, so it cannot be any host the answer names: it must be one
of the expert's configured numbers (``phone``, ``phones``) or match the queue's
``accept_phones`` pattern. Plain numbers are compared without their visual separators
(``+1 (555) 123-4567`` is ``+15551234567``); URIs (``sip:``...) are compared as written.
Every channel's accept goes through the routing core's one check, ``accepted_label``.
"""

from __future__ import annotations

import re

from expertline.routing.model import ExpertSpec

_PLAIN_NUMBER = re.compile(r"(?:tel:)?\+?[0-9][0-9 ().-]*", re.IGNORECASE)
_SEPARATORS = str.maketrans("", "", " ().-")


def normalize(phone: str) -> str:
    """A plain number (or ``tel:`` number) without separators; anything else unchanged."""
    if _PLAIN_NUMBER.fullmatch(phone):
        return phone.translate(_SEPARATORS)
    return phone


def accepted_label(asked: str, expert: ExpertSpec, pattern: str | None) -> str | None:
    """The label for an accept that asks for ``asked``, or None when it is not allowed.

    One of the expert's own numbers gives that number as configured; a number the queue's
    ``pattern`` matches (whole, separators removed) gives the number without separators.
    """
    wanted = normalize(asked)
    for own in (expert.phone, *expert.phones):
        if normalize(own) == wanted:
            return own
    if pattern is not None:
        try:
            if re.fullmatch(pattern, wanted) is not None:
                return wanted
        except re.error:  # validated at configuration import; never raise on outside input
            return None
    return None
