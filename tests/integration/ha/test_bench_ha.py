"""``expertline bench ha`` runs a real pair and reports the takeover times."""

from __future__ import annotations

import pytest

from expertline.bench import ha
from expertline.bench.common import BenchOptions
from support.databases import postgres_database


@pytest.mark.postgres
def test_one_round_reports_both_takeovers_and_every_task_kept() -> None:
    with postgres_database() as url:
        result = ha.run(BenchOptions(db=url, scale=0.3, only=frozenset({"ttl2"})))
    figures = {m.metric: m for m in result.measurements}
    killed = figures["kill -9 -> standby ready max (lease 2 s)"].value
    handed = figures["SIGTERM -> other ready p50 (lease 2 s)"].value
    ttl = ha.SECTIONS["ttl2"]
    # After kill -9 the grant must lapse: at least the part left since its last renewal.
    assert ttl * 0.6 <= killed < 2 * ttl + 5
    assert 0 < handed < ttl + 5
    kept = figures["tasks shown by the new active node (lease 2 s)"]
    assert (kept.value, kept.met) == (ha.TASKS, True)


def test_a_database_other_than_postgresql_is_refused() -> None:
    with pytest.raises(ValueError, match="bench ha needs --bench-db with a PostgreSQL URL"):
        ha.run(BenchOptions())
    with pytest.raises(ValueError, match="PostgreSQL URL"):
        ha.run(BenchOptions(db="sqlite:///x.db"))
