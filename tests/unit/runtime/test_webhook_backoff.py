from __future__ import annotations

import random

from expertline.runtime.webhooks import backoff


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    for attempt, full in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0)):
        delays = [backoff(attempt, 1.0, 300.0, rng) for _ in range(200)]
        assert min(delays) >= full / 2 and max(delays) <= full
        assert max(delays) - min(delays) > full / 10  # jitter spreads retries
    assert all(backoff(40, 1.0, 300.0, rng) <= 300.0 for _ in range(100))
