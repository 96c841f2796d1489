"""The climbs' best steps as the benchmark's figures (rows of the table and the JSON).

A climb that found no passing step (``None``) counts as 0 calls/s; a comparison that was not
measured adds no row, and no ratio.
"""

from __future__ import annotations

from expertline.bench.common import BenchResult
from expertline.bench.sip.climb import RATES
from expertline.bench.sip.sipp import Step


def rate(step: Step | None) -> float:
    """The achieved calls/s of a climb's best step; 0 when no step passed."""
    return step.achieved if step else 0.0


def redirect_figures(
    result: BenchResult,
    ours: Step | None,
    alone: Step | None,
    ceiling: Step | None,
    backend: str,
    seconds: float,
) -> None:
    """Redirect mode: the node, the front alone, and Kamailio's stateless 302 as the ceiling."""
    ours_rate = rate(ours)
    result.add(
        "redirect calls/s (<=1% failed)",
        ours_rate,
        "calls/s",
        ">= 500",
        f"expertline redirect mode, durable runtime on {backend}, {seconds:g}s per step",
    )
    if ours and ours.response_ms is not None:
        result.add("redirect INVITE->302 avg at that rate", ours.response_ms, "ms", None, "")
    result.add(
        "SIP front alone calls/s (<=1% failed)",
        rate(alone),
        "calls/s",
        None,
        "in-memory task port that assigns at once: the SIP layer's own ceiling",
    )
    ceiling_rate = rate(ceiling)
    if ceiling_rate:
        result.add(
            "kamailio stateless 302 calls/s (<=1% failed)",
            ceiling_rate,
            "calls/s",
            None,
            f"ceiling: sl_send_reply, 2 children; rates tried up to {RATES[-1]}/s",
        )
        result.add("expertline / kamailio", ours_rate / ceiling_rate, "ratio", None, "")


def proxy_figures(
    result: BenchResult, ours: Step | None, ceiling: Step | None, backend: str
) -> None:
    """Proxy mode, whole calls: the node, and Kamailio as a stateful proxy to the same phone."""
    ours_rate = rate(ours)
    result.add(
        "proxy full calls/s (<=1% failed)",
        ours_rate,
        "calls/s",
        None,
        f"expertline proxy mode, durable runtime on {backend}: INVITE, 180, 200, ACK, BYE, 200"
        " to a sipp phone",
    )
    if ceiling is not None:
        result.add(
            "kamailio stateful proxy full calls/s (<=1% failed)",
            ceiling.achieved,
            "calls/s",
            None,
            "the same calls through t_relay + record_route to the same kind of phone, 2 children",
        )
        result.add("expertline proxy / kamailio proxy", ours_rate / ceiling.achieved, "ratio")
