"""The load climb: sipp at rising rates against one SIP server until a step fails.

A step passes when at most 1 % of its calls failed and the achieved rate is within 10 % of the
offered one; the climb's figure is its best passing step. ``measure`` is the one loop, whatever
the server; ``climb_node`` and ``climb_kamailio`` start the server, climb, and stop it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from pathlib import Path

from expertline.bench.sip.kamailio import Kamailio
from expertline.bench.sip.node import ENTRY, NodeProcess
from expertline.bench.sip.sipp import Step, run_step
from expertline.net import free_port

RATES = (100, 200, 300, 400, 500, 600, 700, 800, 1000, 1200, 1500, 2000, 2500, 3000)
MAX_FAILED = 0.01
MIN_ACHIEVED = 0.9


def passed(step: Step) -> bool:
    """At most ``MAX_FAILED`` of the calls failed and the achieved rate kept up with the
    offered one (``MIN_ACHIEVED`` of it)."""
    return step.failed_share <= MAX_FAILED and step.achieved >= MIN_ACHIEVED * step.rate


def describe(label: str, step: Step) -> str:
    """One step as the note line the benchmark prints."""
    response = step.response_ms if step.response_ms is not None else float("nan")
    return (
        f"{label} offered={step.rate}/s calls={step.calls} ok={step.succeeded} "
        f"failed={step.failed} ({step.failed_share:.2%}) achieved={step.achieved:.0f}/s "
        f"response={response:.1f}ms"
    )


def measure(
    run: Callable[[int], Step], label: str, notes: list[str], rates: Sequence[int] = RATES
) -> Step | None:
    """Run a step at each rate in turn, noting each, until one fails; the best passing step
    (``None`` when the first fails)."""
    best: Step | None = None
    for rate in rates:
        step = run(rate)
        notes.append(describe(label, step))
        if not passed(step):
            break
        best = step
    return best


def scenario_for(phone: str | None) -> str:
    """The caller's scenario: a redirect (302, ACK) without a phone, a whole call with one."""
    return "caller_redirect" if phone is None else "caller_proxy"


def climb(
    workdir: Path, remote: str, seconds: float, label: str, notes: list[str], scenario: str
) -> Step | None:
    """Measure the server at ``remote`` with sipp steps of ``seconds`` each."""
    return measure(
        lambda rate: run_step(workdir / label, remote, ENTRY, rate, seconds, scenario),
        label,
        notes,
    )


def climb_node(
    workdir: Path,
    db: str | None,
    experts: int,
    seconds: float,
    label: str,
    notes: list[str],
    phone: str | None = None,
) -> Step | None:
    """Start a node process (experts=0: the front alone), climb, stop it. With ``phone``
    (host:port of a sipp phone): proxy mode, whole calls to that phone."""
    node = NodeProcess(workdir, db, experts, label, phone)
    try:
        remote = node.start()
        best = climb(workdir, remote, seconds, label, notes, scenario_for(phone))
    finally:
        stats = node.stop()
    notes.append(f"{label} front counters: {stats}")
    return best


def climb_kamailio(
    workdir: Path,
    seconds: float,
    label: str,
    notes: list[str],
    what: str,
    phone: str | None = None,
) -> Step | None:
    """Start Kamailio (a redirect server, or with ``phone`` a stateful proxy to it), climb,
    stop it. Kamailio is a comparison: when it cannot start, the climb is skipped with a note
    naming ``what`` was not measured, and the other figures stand."""
    kamailio = Kamailio(workdir / f"{label}-server", free_port(socket.SOCK_DGRAM), phone=phone)
    try:
        kamailio.start()
    except RuntimeError as exc:
        kamailio.stop()  # a start that timed out leaves it running
        notes.append(f"{what} not measured: {exc}")
        return None
    try:
        return climb(workdir, kamailio.remote, seconds, label, notes, scenario_for(phone))
    finally:
        kamailio.stop()
