"""Fixtures for the XMPP adapter against real servers: Prosody and ejabberd, experts, a port.

``xmpp_server`` is parametrized: every test that uses it (directly or through ``lab``) runs
once on Prosody and once on ejabberd with the Debian package's default configuration."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from support.ejabberd import EjabberdServer, ejabberd_available, ejabberd_with_router
from support.prosody import ProsodyServer, prosody_available
from support.xmpp_clients import Lab, XmppServer, lab_on

pytestmark = pytest.mark.prosody


def _need(available: bool, package: str) -> None:
    if not available:
        if os.environ.get("CI"):
            raise RuntimeError(f"{package} is required in CI (apt-get install {package})")
        pytest.skip(f"{package} is not installed")


@pytest.fixture
def prosody(tmp_path: Path) -> Iterator[ProsodyServer]:
    _need(prosody_available(), "prosody")
    server = ProsodyServer(tmp_path / "prosody")
    server.register("router", "router-pw")
    with server.started():
        yield server


@pytest.fixture
def ejabberd(tmp_path: Path) -> Iterator[EjabberdServer]:
    _need(ejabberd_available(), "ejabberd")
    yield from ejabberd_with_router(tmp_path / "ejabberd")


@pytest.fixture(
    params=[
        pytest.param("prosody", marks=pytest.mark.prosody),
        pytest.param("ejabberd", marks=pytest.mark.ejabberd),
    ]
)
def xmpp_server(request: pytest.FixtureRequest) -> XmppServer:
    server: XmppServer = request.getfixturevalue(request.param)
    return server


@pytest.fixture
async def lab(xmpp_server: XmppServer) -> AsyncIterator[Lab]:
    async with lab_on(xmpp_server) as lab:
        yield lab
