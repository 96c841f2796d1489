"""``expertline bench ha`` runs a real pair, and a real primary with its replica, and reports
how long routing stopped and how many acknowledged tasks were lost."""

from __future__ import annotations

import pytest

from expertline.bench import ha
from expertline.bench.common import BenchOptions
from expertline.ha.decide import LeaseTimes
from support.databases import postgres_database
from support.replication import replicated_postgres


@pytest.mark.postgres
def test_one_round_of_each_reports_the_interruptions_and_no_task_lost() -> None:
    with replicated_postgres():  # skips without the server binaries, as the section needs them
        pass
    with postgres_database() as url:
        result = ha.run(BenchOptions(db=url, scale=0.2))
    figures = {m.metric: m for m in result.measurements}
    ttl = LeaseTimes().ttl
    killed = figures["kill -9 of the active node -> routing again max"]
    # After kill -9 the grant must lapse: at least what was left of it since its last renewal.
    assert ttl - LeaseTimes().renew - 0.1 <= killed.value < ttl + 5
    handed = figures["SIGTERM of the active node -> the other routes p50"].value
    assert 0 < handed < ttl  # the release is announced: no lease to wait out
    promoted = figures["primary killed -> routing again max (promotion included)"].value
    assert 0 < promoted < 30
    for name in (
        "acknowledged tasks lost (runtime failovers)",
        "acknowledged tasks lost (database promotions)",
    ):
        assert (figures[name].value, figures[name].met) == (0, True)
    assert (
        "settings: ha_lease_ttl=2 ha_renew=0.5 ha_retry_timeout=0.5 ha_poll=0.5"
        in (result.notes[0])
    )


def test_the_runtime_section_needs_a_postgresql_database() -> None:
    with pytest.raises(ValueError, match="bench ha needs --bench-db with a PostgreSQL URL"):
        ha.run(BenchOptions())
    with pytest.raises(ValueError, match="PostgreSQL URL"):
        ha.run(BenchOptions(db="sqlite:///x.db", only=frozenset({"runtime"})))
    with pytest.raises(ValueError, match="unknown section ttl2"):
        ha.run(BenchOptions(only=frozenset({"ttl2"})))
