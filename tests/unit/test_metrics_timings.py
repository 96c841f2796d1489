"""The lock-free timings the runtime observes per batch read, at scrape time, exactly as
prometheus_client's own histogram would for the same observations."""

from __future__ import annotations

from prometheus_client import Histogram

from expertline.metrics import COMMIT_BUCKETS, DECISION_BUCKETS, Timings

OBSERVED = [0.0, 0.00005, 0.0001, 0.00011, 0.001, 0.0049, 0.005, 0.3, 0.5, 0.51, 2.5, 7.0, 60.0]


def _samples(family_samples: list) -> dict[tuple[str, str], float]:  # type: ignore[type-arg]
    return {
        (s.name, s.labels.get("le", "")): s.value
        for s in family_samples
        if not s.name.endswith("_created")
    }


def test_timings_read_as_a_prometheus_histogram_does() -> None:
    for bounds in (DECISION_BUCKETS, COMMIT_BUCKETS):
        ours = Timings("t_seconds", "doc", bounds)
        theirs = Histogram("t_seconds", "doc", buckets=bounds, registry=None)
        for seconds in OBSERVED:
            ours.observe(seconds)
            theirs.observe(seconds)
        (expected,) = theirs.collect()
        got = ours.family()
        assert got.type == "histogram" and got.name == "t_seconds"
        assert _samples(got.samples) == _samples(expected.samples)


def test_no_observation_reads_as_zero_everywhere() -> None:
    family = Timings("t_seconds", "doc", (0.1, 1.0)).family()
    values = _samples(family.samples)
    assert values[("t_seconds_bucket", "+Inf")] == 0
    assert values[("t_seconds_count", "")] == 0
    assert values[("t_seconds_sum", "")] == 0.0
