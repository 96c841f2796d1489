"""The core-only benchmark (``bench.perf``) runs and reports sane figures (small sizes only)."""

from __future__ import annotations

from expertline.bench import perf


def test_synthetic_config_spreads_experts_over_queues() -> None:
    cfg = perf.synthetic_config(experts=300, queues=12, queues_per_expert=3)
    assert len([e for e in cfg.experts if e.startswith("e")]) == 300
    assert set(cfg.queues) == {f"q{i:04d}" for i in range(12)} | {perf.BACKLOG}
    assert sum(len(m[0]) for q, m in cfg.matches.items() if q != perf.BACKLOG) == 900


def test_run_drives_full_lifecycles_and_reports_latencies() -> None:
    report = perf.run(experts=300, queues=12, lifecycles=150, waiting=40, with_exports=True)
    assert report.lifecycles == 150
    assert report.waiting == 40
    assert report.lifecycles_per_cpu_s > 0 and report.decision_ms_p99 >= report.decision_ms_p50
    assert set(report.as_dict()) >= {"lifecycles_per_s", "decision_ms_p99", "rss_mb"}


def test_run_with_every_order() -> None:
    for order in ("most_skilled", "least_busy", "round_robin", "random", "closest_match"):
        assert perf.run(experts=120, queues=6, lifecycles=30, order=order).lifecycles == 30  # type: ignore[arg-type]
