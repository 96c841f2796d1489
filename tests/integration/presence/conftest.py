"""Fixtures for the XMPP adapter against a real Prosody: the server, experts, a port."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from support.prosody import ProsodyServer, prosody_available
from support.xmpp_clients import FakeDirectory, FakePort, Lab

pytestmark = pytest.mark.prosody


@pytest.fixture
def prosody(tmp_path: Path) -> Iterator[ProsodyServer]:
    if not prosody_available():
        if os.environ.get("CI"):
            raise RuntimeError("Prosody is required in CI (apt-get install prosody)")
        pytest.skip("prosody is not installed")
    server = ProsodyServer(tmp_path / "prosody")
    server.register("router", "router-pw")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def lab(prosody: ProsodyServer) -> AsyncIterator[Lab]:
    port = FakePort({})
    lab = Lab(prosody, port, FakeDirectory(port))
    try:
        yield lab
    finally:
        for src in lab.sources:
            await src.async_stop()
        for client in lab.clients:
            await client.disconnect()
