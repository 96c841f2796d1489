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
"""

from __future__ import annotations

import asyncio
import csv
import glob
import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from expertline.bench.common import BenchOptions, BenchResult
from expertline.loops import loop_factory
from expertline.net import free_port
from expertline.routing.model import Presence

ENTRY = "+18005550100"
RATES = (100, 200, 300, 400, 500, 600, 700, 800, 1000, 1200, 1500, 2000, 2500, 3000)
MAX_FAILED = 0.01
MIN_ACHIEVED = 0.9
CALL_TIMEOUT_MS = 5000
DEFAULT_PHONE = "127.0.0.1:5999"  # redirect mode: nobody is called there


@dataclass
class Step:
    rate: int
    calls: int
    succeeded: int
    failed: int
    seconds: float
    response_ms: float | None  # average INVITE -> 302

    @property
    def failed_share(self) -> float:
        return self.failed / max(1, self.succeeded + self.failed)

    @property
    def achieved(self) -> float:
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.failed_share <= MAX_FAILED and self.achieved >= MIN_ACHIEVED * self.rate


# -- the node under test (its own process) ---------------------------------------------------


def _node_main(
    conn: Connection,
    db_url: str | None,
    data_dir: str,
    experts: int,
    mode: str = "redirect",
    phone: str = DEFAULT_PHONE,
) -> None:
    logging.basicConfig(level=logging.WARNING)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:  # the loop a node runs on
        if experts == 0:
            runner.run(_front_only(conn, mode, phone))
        else:
            runner.run(_node(conn, db_url, data_dir, experts, mode, phone))


class InstantPort:
    """A task port that assigns every task at once, in memory: the SIP layer's own ceiling."""

    def __init__(self, phone: str = DEFAULT_PHONE) -> None:
        from expertline.routing.model import RoutingConfig

        self.phone = phone
        self.count = 0
        self.config = RoutingConfig(version=0, experts={}, queues={}, matches={})

    async def async_create_task(self, request: Any) -> Any:
        from expertline.runtime.ports import TaskView

        self.count += 1
        return TaskView(
            str(self.count), "0", "assigned", "bench", "e0", f"sip:1000@{self.phone}", ""
        )

    async def async_create_task_ex(self, request: Any) -> tuple[Any, bool]:
        return await self.async_create_task(request), True

    async def async_task_event(
        self, task_id: str, type: str, disposition: Any = None, handed_off: bool = False
    ) -> Any:
        return None

    def queue(self, queue_id: str) -> Any:
        return None


async def _front_only(conn: Connection, mode: str, phone: str) -> None:
    from expertline.sip.front import SipFront
    from expertline.sip.trust import OutboundTargets

    port = InstantPort(phone)
    targets = OutboundTargets(("127.0.0.1",), config=lambda: port.config)  # the sipp phone
    front = SipFront(port, "127.0.0.1", 0, mode=mode, targets=targets)  # type: ignore[arg-type]
    await _serve(conn, front, [])


async def _serve(conn: Connection, front: Any, services: list[Any]) -> None:
    await front.async_start()
    conn.send(front.sip_port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(conn.fileno(), stop.set)
    await stop.wait()
    loop.remove_reader(conn.fileno())
    stats = dict(front.stats)
    await front.async_stop()
    for service in services:
        await service.async_stop()
    conn.recv()
    conn.send(stats)


async def _node(
    conn: Connection, db_url: str | None, data_dir: str, experts: int, mode: str, phone: str
) -> None:
    from expertline.db import migrate
    from expertline.db.engine import make_engine
    from expertline.routing.model import ExpertSpec, OnMaxWait, QueueSpec, RoutingConfig
    from expertline.runtime.service import RuntimeService
    from expertline.settings import normalize_db_url
    from expertline.sip.front import SipFront

    url = normalize_db_url(db_url) if db_url else f"sqlite:///{data_dir}/bench-sip.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    specs = {
        f"e{i}": ExpertSpec(
            id=f"e{i}",
            name=f"Expert {i}",
            phone=f"sip:{1000 + i}@{phone}",
            may_decline=False,
            max_tasks=10,
        )
        for i in range(experts)
    }
    queue = QueueSpec(
        id="bench", name="Bench", offer_to=1, max_wait=30.0, on_max_wait=OnMaxWait("reject")
    )
    config = RoutingConfig(
        version=1,
        experts=specs,
        queues={"bench": queue},
        matches={"bench": (frozenset(specs),)},
        entry_points={ENTRY: "bench"},
    )
    service = RuntimeService(
        engine,
        node="bench",
        config_loader=lambda _e: (config, None),
        version_probe=lambda _e: 1,
    )
    await service.async_start()
    for expert_id in specs:
        await service.async_set_presence(expert_id, Presence.AVAILABLE, "bench")
    front = SipFront(service, "127.0.0.1", 0, mode=mode)  # type: ignore[arg-type]
    await _serve(conn, front, [service])
    engine.dispose()


# -- Kamailio, the ceiling ---------------------------------------------------------------------

KAMAILIO_CFG = """#!KAMAILIO
debug=0
log_stderror=yes
memdbg=5
memlog=5
children={children}
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="{mpath}"
loadmodule "sl.so"
loadmodule "textops.so"

request_route {{
    if (is_method("ACK")) {{
        exit;
    }}
    append_to_reply("Contact: <sip:1000@127.0.0.1:5999>\\r\\n");
    sl_send_reply("302", "Moved Temporarily");
    exit;
}}
"""


# A stateful proxy in front of one phone: what the same full calls cost through Kamailio.
KAMAILIO_PROXY_CFG = """#!KAMAILIO
debug=0
log_stderror=yes
memdbg=5
memlog=5
children={children}
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="{mpath}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    t_check_trans();
    record_route();
    $du = "sip:{phone}";
    t_relay();
    exit;
}}
"""


def kamailio_modules() -> str | None:
    for path in [*sorted(glob.glob("/usr/lib/*/kamailio/modules")), "/usr/lib/kamailio/modules"]:
        if Path(path, "sl.so").exists():
            return path
    return None


class Kamailio:
    """A throwaway Kamailio on a loopback port: a stateless redirect server, or (``phone``:
    host:port) a stateful proxy to that phone."""

    def __init__(
        self, workdir: Path, port: int, children: int = 2, phone: str | None = None
    ) -> None:
        self.workdir = workdir
        self.port = port
        self.children = children
        self.phone = phone
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
        mpath = kamailio_modules()
        if mpath is None or not Path(binary).exists():
            raise RuntimeError("kamailio is not installed (apt-get install -y kamailio)")
        cfg = self.workdir / "kamailio.cfg"
        template = KAMAILIO_CFG if self.phone is None else KAMAILIO_PROXY_CFG
        cfg.write_text(
            template.format(
                children=self.children, port=self.port, mpath=mpath + "/", phone=self.phone
            )
        )
        check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"kamailio.cfg rejected: {check.stderr.decode()[-500:]}")
        self.process = subprocess.Popen(
            [
                binary,
                "-f",
                str(cfg),
                "-DD",
                "-E",
                "-m",
                "64",
                "-M",
                "8",
                "-w",
                str(self.workdir),
                "-Y",
                str(self.workdir),
                "-P",
                str(self.workdir / "kamailio.pid"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "kamailio.log", "wb"),  # noqa: SIM115 - owned by the child
            start_new_session=True,
        )
        _wait_udp_bound(self.port, self.process)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        import os

        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def _wait_udp_bound(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited while starting")
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return
        finally:
            probe.close()
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on udp {port} after {timeout}s")


# -- sipp load ---------------------------------------------------------------------------------


def run_step(
    workdir: Path, remote: str, rate: int, seconds: float, scenario_name: str = "caller_redirect"
) -> Step:
    """One sipp run: ``rate`` calls/s for ``seconds``; counts from sipp's statistics file."""
    sipp = shutil.which("sipp")
    if sipp is None:
        raise RuntimeError("sipp is not installed (apt-get install -y sip-tester)")
    step_dir = workdir / f"rate-{rate}"
    step_dir.mkdir(parents=True, exist_ok=True)
    scenario = step_dir / f"{scenario_name}.xml"
    source = resources.files("expertline.sip") / "scenarios" / f"{scenario_name}.xml"
    scenario.write_bytes(source.read_bytes())
    calls = max(1, int(rate * seconds))
    stats = step_dir / "stats.csv"
    cmd = [
        sipp, "-sf", str(scenario), "-s", ENTRY, "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)),
        "-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(max(rate * 6, 100)),
        "-recv_timeout", str(CALL_TIMEOUT_MS), "-nostdin", "-trace_stat", "-stf", str(stats),
        "-fd", "3600", "-timeout", f"{int(seconds * 3 + 30)}s", "-max_recv_loops", "100000",
        "-max_sched_loops", "100000", "-buff_size", "4194304", "-d", "0", remote,
    ]  # fmt: skip
    started = time.monotonic()
    subprocess.run(
        cmd,
        cwd=step_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        timeout=seconds * 3 + 60,
        check=False,
    )
    elapsed = time.monotonic() - started
    succeeded, failed, seconds_measured, response = _read_stats(stats)
    return Step(rate, calls, succeeded, failed, seconds_measured or elapsed, response)


def _read_stats(path: Path) -> tuple[int, int, float | None, float | None]:
    """(successful, failed, elapsed seconds, avg response ms) from sipp's ``-trace_stat`` CSV."""
    if not path.exists():
        return 0, 0, None, None
    with path.open() as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return 0, 0, None, None
    header, last = rows[0], rows[-1]
    col = {name: i for i, name in enumerate(header)}

    def number(name: str) -> float | None:
        i = col.get(name)
        if i is None or i >= len(last) or not last[i].strip():
            return None
        try:
            return float(last[i])
        except ValueError:
            return None

    def epoch(name: str) -> float | None:
        i = col.get(name)
        if i is None or i >= len(last):
            return None
        try:
            return float(last[i].split("\t")[-1])
        except ValueError:
            return None

    succeeded = int(number("SuccessfulCall(C)") or 0)
    failed = int(number("FailedCall(C)") or 0)
    start, now = epoch("StartTime"), epoch("CurrentTime")
    elapsed = now - start if start is not None and now is not None else None
    response = _rtd_ms(last, col)
    return succeeded, failed, elapsed, response


def _rtd_ms(row: list[str], col: dict[str, int]) -> float | None:
    i = col.get("ResponseTime1(C)")
    if i is None or i >= len(row):
        return None
    parts = row[i].split(":")  # HH:MM:SS:microseconds
    try:
        h, m, s, us = (float(p) for p in parts)
    except ValueError:
        return None
    return (h * 3600 + m * 60 + s) * 1000 + us / 1000


def climb(
    workdir: Path,
    remote: str,
    seconds: float,
    label: str,
    notes: list[str],
    scenario: str = "caller_redirect",
) -> Step | None:
    """Rising rates until a step fails; the best passing step."""
    best: Step | None = None
    for rate in RATES:
        step = run_step(workdir / label, remote, rate, seconds, scenario)
        notes.append(
            f"{label} offered={rate}/s calls={step.calls} ok={step.succeeded} "
            f"failed={step.failed} ({step.failed_share:.2%}) achieved={step.achieved:.0f}/s "
            f"response={step.response_ms if step.response_ms is not None else float('nan'):.1f}ms"
        )
        if not step.ok:
            break
        best = step
    return best


def _climb_node(
    workdir: Path,
    options: BenchOptions,
    experts: int,
    seconds: float,
    label: str,
    notes: list[str],
    phone: str | None = None,
) -> Step | None:
    """Start a node process (experts=0: the front alone), climb, stop it. With ``phone``
    (host:port of a sipp phone): proxy mode, whole calls to that phone."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    mode = "redirect" if phone is None else "proxy"
    node = ctx.Process(
        target=_node_main,
        args=(child, options.db, str(workdir), experts, mode, phone or DEFAULT_PHONE),
        name=f"bench-{label}",
    )
    node.start()
    stats: dict[str, Any] = {}
    try:
        if not parent.poll(60):
            raise RuntimeError("the node under test did not start within 60 s")
        port = parent.recv()
        scenario = "caller_redirect" if phone is None else "caller_proxy"
        best = climb(workdir, f"127.0.0.1:{port}", seconds, label, notes, scenario)
    finally:
        parent.send("stop")
        if parent.poll(30):
            stats = parent.recv()
        node.join(30)
        if node.is_alive():
            node.kill()
    notes.append(f"{label} front counters: {stats}")
    return best


class SippPhone:
    """A sipp phone answering every call at once (``phone_answer_now``) until stopped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port(socket.SOCK_DGRAM)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> SippPhone:
        sipp = shutil.which("sipp")
        if sipp is None:
            raise RuntimeError("sipp is not installed (apt-get install -y sip-tester)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        scenario = self.workdir / "phone_answer_now.xml"
        source = resources.files("expertline.sip") / "scenarios" / "phone_answer_now.xml"
        scenario.write_bytes(source.read_bytes())
        cmd = [
            sipp, "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(self.port), "-nostdin",
            "-max_recv_loops", "100000", "-max_sched_loops", "100000", "-buff_size", "4194304",
            "-deadcall_wait", "1000",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_udp_bound(self.port, self.process)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def _proxy_figures(
    workdir: Path, options: BenchOptions, seconds: float, notes: list[str]
) -> tuple[Step | None, Step | None]:
    """Whole calls in proxy mode through the node, then through Kamailio (stateful), each to
    a fresh sipp phone."""
    phone = SippPhone(workdir / "phone-expertline").start()
    try:
        ours = _climb_node(
            workdir, options, 200, seconds, "expertline-proxy", notes, phone=phone.address
        )
    finally:
        phone.stop()
    phone = SippPhone(workdir / "phone-kamailio").start()
    (workdir / "kamailio-proxy").mkdir()
    kamailio = Kamailio(
        workdir / "kamailio-proxy", free_port(socket.SOCK_DGRAM), phone=phone.address
    )
    theirs = None
    try:
        kamailio.start()
    except RuntimeError as exc:
        notes.append(f"kamailio proxy not measured: {exc}")
    else:
        try:
            theirs = climb(
                workdir,
                f"127.0.0.1:{kamailio.port}",
                seconds,
                "kamailio-proxy",
                notes,
                "caller_proxy",
            )
        finally:
            kamailio.stop()
    finally:
        phone.stop()
    return ours, theirs


SECTIONS = ("redirect", "proxy")  # --only: the redirect-mode rates, the full proxied calls


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
    ours = _climb_node(workdir, options, 200, seconds, "expertline", result.notes)
    alone = _climb_node(workdir, options, 0, seconds, "front-alone", result.notes)
    (workdir / "kamailio-run").mkdir()
    kamailio = Kamailio(workdir / "kamailio-run", free_port(socket.SOCK_DGRAM))
    ceiling = None
    try:
        kamailio.start()
    except RuntimeError as exc:  # the ceiling is a comparison: the other figures stand
        result.notes.append(f"kamailio ceiling not measured: {exc}")
    else:
        try:
            ceiling = climb(
                workdir, f"127.0.0.1:{kamailio.port}", seconds, "kamailio", result.notes
            )
        finally:
            kamailio.stop()
    ours_rate = ours.achieved if ours else 0.0
    alone_rate = alone.achieved if alone else 0.0
    ceiling_rate = ceiling.achieved if ceiling else 0.0
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
        alone_rate,
        "calls/s",
        None,
        "in-memory task port that assigns at once: the SIP layer's own ceiling",
    )
    if ceiling_rate:
        result.add(
            "kamailio stateless 302 calls/s (<=1% failed)",
            ceiling_rate,
            "calls/s",
            None,
            f"ceiling: sl_send_reply, 2 children; rates tried up to {RATES[-1]}/s",
        )
        result.add("expertline / kamailio", ours_rate / ceiling_rate, "ratio", None, "")


def _proxy(
    workdir: Path, options: BenchOptions, seconds: float, backend: str, result: BenchResult
) -> None:
    proxy, proxy_ceiling = _proxy_figures(workdir, options, seconds, result.notes)
    proxy_rate = proxy.achieved if proxy else 0.0
    result.add(
        "proxy full calls/s (<=1% failed)",
        proxy_rate,
        "calls/s",
        None,
        f"expertline proxy mode, durable runtime on {backend}: INVITE, 180, 200, ACK, BYE, 200"
        " to a sipp phone",
    )
    if proxy_ceiling is not None:
        result.add(
            "kamailio stateful proxy full calls/s (<=1% failed)",
            proxy_ceiling.achieved,
            "calls/s",
            None,
            "the same calls through t_relay + record_route to the same kind of phone, 2 children",
        )
        result.add(
            "expertline proxy / kamailio proxy", proxy_rate / proxy_ceiling.achieved, "ratio"
        )
