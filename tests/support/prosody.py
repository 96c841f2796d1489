"""The throwaway Prosody used by tests (shared with ``expertline bench xmpp``)."""

from expertline.presence.prosody import (
    COMPONENT,
    DOMAIN,
    ProsodyServer,
    free_port,
    prosody_available,
    running_prosody,
)

__all__ = [
    "COMPONENT",
    "DOMAIN",
    "ProsodyServer",
    "free_port",
    "prosody_available",
    "running_prosody",
]
