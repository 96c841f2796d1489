"""Signatures of feed deliveries: HMAC-SHA256 over the timestamp and the body, like Stripe's.

The header is ``X-Expertline-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>`` is
HMAC-SHA256 with the target's secret over ``"<t>." + body`` (the exact bytes posted). A
receiver recomputes it, compares in constant time, and refuses a ``t`` too far from its clock
(replays). ``verify`` is that check, for receivers written in Python.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Expertline-Signature"
TOLERANCE = 300.0  # seconds a receiver should accept between t and its own clock


def sign(secret: bytes, body: bytes, at: float | None = None) -> str:
    """The signature header's value for ``body`` posted at ``at`` (now by default)."""
    t = int(at if at is not None else time.time())
    return f"t={t},v1={_digest(secret, t, body)}"


def verify(
    secret: bytes, body: bytes, header: str, now: float | None = None, tolerance: float = TOLERANCE
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds of now."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    try:
        t = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - t) > tolerance:
        return False
    expected = _digest(secret, t, body)
    return any(hmac.compare_digest(expected, v) for v in fields.get("v1", []))


def _digest(secret: bytes, t: int, body: bytes) -> str:
    return hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
