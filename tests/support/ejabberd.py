"""The throwaway ejabberd used by tests (shared with ``expertline bench xmpp``)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from expertline.presence.ejabberd import EjabberdServer, ejabberd_available
from expertline.presence.loopback_server import COMPONENT, DOMAIN

__all__ = ["COMPONENT", "DOMAIN", "EjabberdServer", "ejabberd_available", "ejabberd_with_router"]


def ejabberd_with_router(directory: Path, **kw: Any) -> Iterator[EjabberdServer]:
    """A fixture's body (``yield from``): a started ejabberd in ``directory`` with the router's
    account (``router``, ``router-pw``), always stopped; the test is skipped where ejabberd is
    not installed."""
    if not ejabberd_available():
        pytest.skip("ejabberd is not installed")
    with EjabberdServer(directory, **kw).started() as server:
        server.register("router", "router-pw")
        yield server
