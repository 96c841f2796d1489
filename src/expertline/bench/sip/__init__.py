"""``expertline bench sip``: redirect-mode call rate with sipp, side by side with Kamailio.

Set-up: the routing runtime (temporary SQLite, or ``--bench-db``) and the SIP front in
redirect mode run in a *separate process* (as a node would), one queue served by experts who
may not decline (no IM round trip: the task is assigned as it is created). sipp
(``caller_redirect`` scenario) calls the entry point at rising rates; each step lasts
``5 s x scale``. A call succeeds when its INVITE gets a 302 with a Contact and the ACK goes
out; a call with no final answer within 5 s fails. The highest step with at most 1 % failed
calls and an achieved rate within 10 % of the offered one is the result.

The ceiling: the same sipp load against Kamailio configured as a stateless redirect server
(``sl_send_reply("302")`` with a Contact) from a generated kamailio.cfg in a temp dir.

Proxy mode, full calls: a sipp phone (``phone_answer_now``: 180 and 200 at once, waits for
the BYE) answers every call; sipp callers (``caller_proxy``) make whole calls through the node in
proxy mode (INVITE, 180, 200, ACK, BYE, 200; no talk pause), the experts' phones being that
sipp phone: four runtime operations per call (create/assigned, connected, ended). Side by
side, the same calls through Kamailio as a stateful proxy (``t_relay`` with ``record_route``)
to the same phone: what a SIP proxy alone costs on this machine.

Both share this machine's cores with sipp itself; the ratio is the meaningful figure.

The parts: ``node`` (the node under test), ``kamailio`` (the comparison), ``sipp`` (the load),
``climb`` (rising rates, one measuring loop), ``figures`` (best steps to result rows).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from expertline.bench.common import BenchOptions, BenchResult
from expertline.bench.sip.climb import climb_kamailio, climb_node
from expertline.bench.sip.figures import proxy_figures, redirect_figures
from expertline.bench.sip.sipp import SippPhone

__all__ = ["SECTIONS", "run"]

SECTIONS = ("redirect", "proxy")  # --only: the redirect-mode rates, the full proxied calls
EXPERTS = 200  # in the node under test's one queue


def run(options: BenchOptions) -> BenchResult:
    options.check_sections(list(SECTIONS))
    result = BenchResult("sip")
    seconds = max(1.0, 5.0 * options.scale)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    backend = "PostgreSQL" if options.db and "postgres" in options.db else "SQLite"
    with tempfile.TemporaryDirectory(prefix="expertline-bench-sip-") as tmp:
        workdir = Path(tmp)
        if options.selected("redirect"):
            _redirect(workdir, options, seconds, backend, result)
        if options.selected("proxy"):
            _proxy(workdir, options, seconds, backend, result)
    result.notes.append(f"load average at start: {load} ({os.cpu_count()} CPUs)")
    return result


def _redirect(
    workdir: Path, options: BenchOptions, seconds: float, backend: str, result: BenchResult
) -> None:
    notes = result.notes
    ours = climb_node(workdir, options.db, EXPERTS, seconds, "expertline", notes)
    alone = climb_node(workdir, options.db, 0, seconds, "front-alone", notes)
    ceiling = climb_kamailio(workdir, seconds, "kamailio", notes, "kamailio ceiling")
    redirect_figures(result, ours, alone, ceiling, backend, seconds)


def _proxy(
    workdir: Path, options: BenchOptions, seconds: float, backend: str, result: BenchResult
) -> None:
    """Whole calls through the node in proxy mode, then through Kamailio (stateful), each to
    a fresh sipp phone."""
    notes = result.notes
    with SippPhone(workdir / "phone-expertline") as phone:
        ours = climb_node(
            workdir, options.db, EXPERTS, seconds, "expertline-proxy", notes, phone.address
        )
    with SippPhone(workdir / "phone-kamailio") as phone:
        theirs = climb_kamailio(
            workdir, seconds, "kamailio-proxy", notes, "kamailio proxy", phone.address
        )
    proxy_figures(result, ours, theirs, backend)
