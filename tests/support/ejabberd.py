"""The throwaway ejabberd used by tests (shared with ``expertline bench xmpp``)."""

from expertline.presence.ejabberd import (
    COMPONENT,
    DOMAIN,
    EjabberdServer,
    ejabberd_available,
    running_ejabberd,
)

__all__ = ["COMPONENT", "DOMAIN", "EjabberdServer", "ejabberd_available", "running_ejabberd"]
