"""The throwaway PostgreSQL primary and synchronous replica used by the HA tests (shared
with ``expertline bench ha``). Without the server binaries the tests are skipped, except in
CI, where they must run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from expertline.db.replicated import ReplicatedPostgres, ServersMissing, servers_available
from expertline.db.replicated import replicated_postgres as _replicated

__all__ = ["ReplicatedPostgres", "replicated_postgres"]


@contextmanager
def replicated_postgres() -> Iterator[ReplicatedPostgres]:
    if not servers_available():
        if os.environ.get("CI"):
            raise ServersMissing("the PostgreSQL server binaries are required in CI")
        pytest.skip("PostgreSQL server binaries not installed")
    with _replicated() as cluster:
        yield cluster
