"""The throwaway Prosody used by tests (shared with ``expertline bench xmpp``)."""

from expertline.presence.loopback_server import COMPONENT, DOMAIN
from expertline.presence.prosody import ProsodyServer, prosody_available

__all__ = ["COMPONENT", "DOMAIN", "ProsodyServer", "prosody_available"]
