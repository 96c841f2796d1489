"""The SIP benchmark's pure parts: the climb's pass rule and loop, sipp's statistics file, and
the figures made of the best steps (synthetic steps, no sipp, no server)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from expertline.bench.common import BenchResult
from expertline.bench.sip.climb import describe, measure, passed
from expertline.bench.sip.figures import proxy_figures, redirect_figures
from expertline.bench.sip.sipp import Step, read_stats, rtd_ms


def step(rate: int, succeeded: int | None = None, failed: int = 0, seconds: float = 1.0) -> Step:
    ok = rate if succeeded is None else succeeded
    return Step(rate, ok + failed, ok, failed, seconds, response_ms=float(rate) / 100)


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (step(100), True),
        (step(100, succeeded=99, failed=1), True),  # 1 % failed: still passes
        (step(100, succeeded=98, failed=2), False),
        (step(100, succeeded=91), True),  # achieved 91/s of 100/s offered
        (step(100, succeeded=89), False),
        (step(100, seconds=2.0), False),  # 100 calls took 2 s: 50/s achieved
        (step(100, succeeded=0, seconds=0.0), False),
    ],
)
def test_a_step_passes_with_few_failures_and_the_offered_rate_kept(
    candidate: Step, expected: bool
) -> None:
    assert passed(candidate) is expected


def test_measure_climbs_until_a_step_fails_and_keeps_the_best_passing_one() -> None:
    tried: list[int] = []

    def run(rate: int) -> Step:
        tried.append(rate)
        return step(rate) if rate <= 300 else step(rate, succeeded=rate // 2)

    notes: list[str] = []
    best = measure(run, "node", notes, rates=(100, 200, 300, 400, 500))
    assert best is not None and best.rate == 300
    assert tried == [100, 200, 300, 400]  # stops at the first failing step
    assert [n.split()[1] for n in notes] == [f"offered={r}/s" for r in tried]
    assert all(n.startswith("node ") for n in notes)


def test_measure_gives_none_when_the_first_step_fails() -> None:
    notes: list[str] = []
    assert measure(lambda rate: step(rate, succeeded=0, failed=rate), "x", notes, (10, 20)) is None
    assert len(notes) == 1


def test_measure_keeps_the_last_step_when_every_rate_passes() -> None:
    best = measure(step, "x", [], rates=(10, 20, 30))
    assert best is not None and best.rate == 30


def test_describe_says_the_counts_and_a_missing_response_time() -> None:
    line = describe("kamailio", Step(200, 200, 190, 10, 2.0, None))
    assert "offered=200/s calls=200 ok=190 failed=10 (5.00%) achieved=95/s" in line
    assert line.endswith("response=nanms")


def _stats_file(path: Path, rows: list[dict[str, str]]) -> Path:
    header = ["StartTime", "CurrentTime", "SuccessfulCall(C)", "FailedCall(C)", "ResponseTime1(C)"]
    lines = [";".join(header)] + [";".join(row.get(h, "") for h in header) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_stats_takes_the_last_row_of_sipps_statistics(tmp_path: Path) -> None:
    first = {"StartTime": "2026-01-01\t10:00:00.000000\t1000.0", "SuccessfulCall(C)": "1"}
    last = {
        "StartTime": "2026-01-01\t10:00:00.000000\t1000.0",
        "CurrentTime": "2026-01-01\t10:00:02.500000\t1002.5",
        "SuccessfulCall(C)": "480",
        "FailedCall(C)": "20",
        "ResponseTime1(C)": "00:00:01:250000",
    }
    succeeded, failed, seconds, response = read_stats(
        _stats_file(tmp_path / "s.csv", [first, last])
    )
    assert (succeeded, failed) == (480, 20)
    assert seconds == pytest.approx(2.5)
    assert response == pytest.approx(1250.0)


def test_read_stats_without_data_gives_zeros(tmp_path: Path) -> None:
    assert read_stats(tmp_path / "missing.csv") == (0, 0, None, None)
    assert read_stats(_stats_file(tmp_path / "header.csv", [])) == (0, 0, None, None)
    blank = read_stats(_stats_file(tmp_path / "blank.csv", [{}]))
    assert blank == (0, 0, None, None)


def test_rtd_ms_reads_hours_to_microseconds() -> None:
    assert rtd_ms("01:02:03:004000") == pytest.approx(3_723_004.0)
    assert rtd_ms("00:00:00") is None
    assert rtd_ms("") is None


def _rows(result: BenchResult) -> dict[str, float]:
    return {m.metric: m.value for m in result.measurements}


def test_redirect_figures_compare_the_node_with_the_ceiling() -> None:
    result = BenchResult("sip")
    ours, alone, ceiling = step(600, seconds=1.2), step(1000), step(2000)
    redirect_figures(result, ours, alone, ceiling, "SQLite", 1.0)
    rows = _rows(result)
    assert rows["redirect calls/s (<=1% failed)"] == pytest.approx(500.0)
    assert rows["redirect INVITE->302 avg at that rate"] == ours.response_ms
    assert rows["SIP front alone calls/s (<=1% failed)"] == pytest.approx(1000.0)
    assert rows["kamailio stateless 302 calls/s (<=1% failed)"] == pytest.approx(2000.0)
    assert rows["expertline / kamailio"] == pytest.approx(0.25)
    assert result.measurements[0].met is True  # the target: >= 500
    assert "on SQLite, 1s per step" in result.measurements[0].context


def test_redirect_figures_without_passing_steps_or_ceiling() -> None:
    result = BenchResult("sip")
    redirect_figures(result, None, None, None, "PostgreSQL", 2.5)
    rows = _rows(result)
    assert rows == {
        "redirect calls/s (<=1% failed)": 0.0,
        "SIP front alone calls/s (<=1% failed)": 0.0,
    }
    assert result.measurements[0].met is False


def test_proxy_figures_with_and_without_kamailio() -> None:
    with_ceiling = BenchResult("sip")
    proxy_figures(with_ceiling, step(300), step(600), "SQLite")
    rows = _rows(with_ceiling)
    assert rows["proxy full calls/s (<=1% failed)"] == pytest.approx(300.0)
    assert rows["kamailio stateful proxy full calls/s (<=1% failed)"] == pytest.approx(600.0)
    assert rows["expertline proxy / kamailio proxy"] == pytest.approx(0.5)

    alone = BenchResult("sip")
    proxy_figures(alone, None, None, "SQLite")
    assert _rows(alone) == {"proxy full calls/s (<=1% failed)": 0.0}
    assert not any(math.isnan(m.value) for m in alone.measurements)
