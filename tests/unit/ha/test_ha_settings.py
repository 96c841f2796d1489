"""The HA settings: defaults that fail over within 3 s, and the lease rule enforced."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from expertline.ha.decide import LeaseTimes
from expertline.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in ("LEASE_TTL", "RENEW", "RETRY_TIMEOUT", "POLL"):
        monkeypatch.delenv(f"EXPERTLINE_HA_{name}", raising=False)
    monkeypatch.delenv("EXPERTLINE_SETTINGS", raising=False)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]


def test_the_defaults_are_the_lease_keepers() -> None:
    times = load_settings().lease_times()
    assert times == LeaseTimes()
    assert (times.ttl, times.renew, times.retry_timeout, times.poll) == (2.0, 0.5, 0.5, 0.5)


def test_settings_from_the_environment_that_break_the_rule_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXPERTLINE_HA_LEASE_TTL", "1.5")
    with pytest.raises(ValidationError, match=r"the lease time 1\.5 s is too short") as caught:
        load_settings()
    assert caught.value.errors()[0]["loc"] == ("ha_lease_ttl",)
    monkeypatch.setenv("EXPERTLINE_HA_RENEW", "0.25")
    monkeypatch.setenv("EXPERTLINE_HA_RETRY_TIMEOUT", "0.25")
    times = load_settings().lease_times()  # 0.25 + 2 x 0.25 + 0.5 <= 1.5
    assert (times.ttl, times.renew, times.retry_timeout) == (1.5, 0.25, 0.25)


def test_a_longer_lease_is_fine_and_a_non_positive_time_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXPERTLINE_HA_LEASE_TTL", "60")
    assert load_settings().ha_lease_ttl == 60
    monkeypatch.setenv("EXPERTLINE_HA_RETRY_TIMEOUT", "0")
    with pytest.raises(ValidationError, match="ha_retry_timeout"):
        load_settings()
