"""sipp, the load: one caller run at a fixed rate (counted from sipp's statistics file), and a
phone that answers every call.

The scenarios are the committed ones in ``expertline/sip/scenarios``, copied next to each run
(sipp writes its logs beside the scenario).
"""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType

from expertline.net import free_port
from expertline.processes import start_group, stop_group, wait_bound

CALL_TIMEOUT_MS = 5000  # a call with no final answer within this fails


@dataclass
class Step:
    """One sipp run at one offered rate."""

    rate: int  # offered, calls/s
    calls: int
    succeeded: int
    failed: int
    seconds: float
    response_ms: float | None  # average INVITE -> final answer (302, or 200 through a proxy)

    @property
    def failed_share(self) -> float:
        return self.failed / max(1, self.succeeded + self.failed)

    @property
    def achieved(self) -> float:
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0


def sipp_binary() -> str:
    sipp = shutil.which("sipp")
    if sipp is None:
        raise RuntimeError("sipp is not installed (apt-get install -y sip-tester)")
    return sipp


def copy_scenario(directory: Path, name: str) -> Path:
    """The committed scenario ``name`` copied into ``directory``; returns the copy."""
    directory.mkdir(parents=True, exist_ok=True)
    scenario = directory / f"{name}.xml"
    source = resources.files("expertline.sip") / "scenarios" / f"{name}.xml"
    scenario.write_bytes(source.read_bytes())
    return scenario


def run_step(
    workdir: Path, remote: str, service: str, rate: int, seconds: float, scenario_name: str
) -> Step:
    """One sipp run: ``rate`` calls/s to ``service`` at ``remote`` for ``seconds``; counts
    from sipp's statistics file (wall time if the file has none)."""
    sipp = sipp_binary()
    step_dir = workdir / f"rate-{rate}"
    scenario = copy_scenario(step_dir, scenario_name)
    calls = max(1, int(rate * seconds))
    stats = step_dir / "stats.csv"
    cmd = [
        sipp, "-sf", str(scenario), "-s", service, "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)),
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
    succeeded, failed, seconds_measured, response = read_stats(stats)
    return Step(rate, calls, succeeded, failed, seconds_measured or elapsed, response)


def read_stats(path: Path) -> tuple[int, int, float | None, float | None]:
    """(successful, failed, elapsed seconds, avg response ms) from the last row of sipp's
    ``-trace_stat`` CSV; zeros and ``None`` when the file is missing or has no data row."""
    if not path.exists():
        return 0, 0, None, None
    with path.open() as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return 0, 0, None, None
    header, last = rows[0], rows[-1]
    col = {name: i for i, name in enumerate(header)}

    def cell(name: str) -> str | None:
        i = col.get(name)
        return last[i] if i is not None and i < len(last) else None

    def number(name: str) -> float | None:
        text = cell(name)
        if text is None or not text.strip():
            return None
        try:
            return float(text)
        except ValueError:
            return None

    def epoch(name: str) -> float | None:  # "date<TAB>time<TAB>epoch seconds"
        text = cell(name)
        if text is None:
            return None
        try:
            return float(text.split("\t")[-1])
        except ValueError:
            return None

    succeeded = int(number("SuccessfulCall(C)") or 0)
    failed = int(number("FailedCall(C)") or 0)
    start, now = epoch("StartTime"), epoch("CurrentTime")
    elapsed = now - start if start is not None and now is not None else None
    rtd = cell("ResponseTime1(C)")
    return succeeded, failed, elapsed, rtd_ms(rtd) if rtd is not None else None


def rtd_ms(text: str) -> float | None:
    """sipp's response time ``HH:MM:SS:microseconds`` in milliseconds."""
    try:
        h, m, s, us = (float(p) for p in text.split(":"))
    except ValueError:
        return None
    return (h * 3600 + m * 60 + s) * 1000 + us / 1000


class SippPhone:
    """A sipp phone answering every call at once (``phone_answer_now``) until stopped; a
    context manager that starts and stops it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port(socket.SOCK_DGRAM)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> SippPhone:
        sipp = sipp_binary()
        scenario = copy_scenario(self.workdir, "phone_answer_now")
        cmd = [
            sipp, "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(self.port), "-nostdin",
            "-max_recv_loops", "100000", "-max_sched_loops", "100000", "-buff_size", "4194304",
            "-deadcall_wait", "1000",
        ]  # fmt: skip
        self.process = start_group(cmd, cwd=self.workdir)
        wait_bound(self.process, self.port)
        return self

    def stop(self) -> None:
        stop_group(self.process)

    def __enter__(self) -> SippPhone:
        try:
            return self.start()
        except BaseException:
            self.stop()  # a start that timed out leaves it running
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
