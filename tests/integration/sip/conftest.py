"""Fixtures for SIP tests (helpers in ``sip_harness``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

sys.path.insert(0, str(Path(__file__).parent))

from sip_harness import SipHarness

from support.baresip import BaresipPhone, require_baresip
from support.kamailio import KamailioPool, require_kamailio
from support.sipp import SippPool, require_sipp


@contextlib.asynccontextmanager
async def _harness(engine: Engine, tmp_path: Path) -> AsyncIterator[SipHarness]:
    """A harness whose sipp processes and node are always stopped afterwards."""
    pool = SippPool(tmp_path / "sipp")
    harness = SipHarness(engine, tmp_path, pool)
    try:
        yield harness
    finally:
        pool.stop_all()
        await harness.stop()


@pytest.fixture
async def sip(sqlite_engine: Engine, tmp_path: Path) -> AsyncIterator[SipHarness]:
    """The harness with sipp available (skips without it, fails in CI), on SQLite: SIP
    behaviour does not depend on the database; ``sip_any_db`` runs on both backends."""
    require_sipp()
    async with _harness(sqlite_engine, tmp_path) as harness:
        yield harness


@pytest.fixture
async def sip_any_db(engine: Engine, tmp_path: Path) -> AsyncIterator[SipHarness]:
    """The sipp harness on SQLite and on PostgreSQL (records are written by each)."""
    require_sipp()
    async with _harness(engine, tmp_path) as harness:
        yield harness


@pytest.fixture
async def wire(sqlite_engine: Engine, tmp_path: Path) -> AsyncIterator[SipHarness]:
    """The harness for tests that speak SIP from Python sockets (no sipp). Protocol behaviour
    does not depend on the database, so these run on SQLite only."""
    async with _harness(sqlite_engine, tmp_path) as harness:
        yield harness


@pytest.fixture
async def wire_any_db(engine: Engine, tmp_path: Path) -> AsyncIterator[SipHarness]:
    """Python-socket SIP on SQLite and on PostgreSQL: for values that must fit the columns."""
    async with _harness(engine, tmp_path) as harness:
        yield harness


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[KamailioPool]:
    """Kamailio processes in front of the front (skips without Kamailio, fails in CI)."""
    require_kamailio()
    require_sipp()
    pool = KamailioPool(tmp_path / "kamailio")
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def baresip(tmp_path: Path) -> Iterator[Callable[..., BaresipPhone]]:
    """Starts baresip phones, or callers with ``dial=URI`` (skips without baresip, fails in
    CI); all stopped afterwards."""
    require_baresip()
    phones: list[BaresipPhone] = []

    def start(dial: str | None = None) -> BaresipPhone:
        phones.append(BaresipPhone(tmp_path / f"baresip{len(phones)}", dial=dial))
        return phones[-1].start()

    try:
        yield start
    finally:
        for phone in phones:
            phone.stop()
