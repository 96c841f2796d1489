"""Child processes in their own session: the servers that run beside a node in its tests and
benchmarks (XMPP servers, Kamailio, sipp and baresip phones).

Each starts as the leader of a new process group, so stopping it reaches everything it started;
every wait is bounded and a server that exits while starting says so at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil

from expertline.net import port_taken


def start_group(
    command: list[str],
    *,
    output: Path | None = None,
    append: bool = False,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session, its standard output and error written to
    ``output`` (appended with ``append``; discarded without ``output``)."""
    if output is None:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    with output.open("ab" if append else "wb") as out:  # the child keeps its own copy
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_group(process: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """SIGTERM to the group ``process`` leads, SIGKILL if it has not ended after ``timeout``
    seconds; nothing for a process that has already ended."""
    if process is None or process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)


def kill_group(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGKILL to the group ``process`` leads, as a crashed host would end it, then reap it
    within ``timeout`` seconds."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout)


def wait_bound(
    process: subprocess.Popen[Any],
    port: int,
    kinds: Iterable[int] = (socket.SOCK_DGRAM,),
    timeout: float = 10.0,
) -> None:
    """Return once ``port`` is taken on loopback for every socket kind in ``kinds`` (UDP by
    default); raise if ``process`` exits first or the port is still free after ``timeout``."""
    kinds = tuple(kinds)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} while starting")
        if all(port_taken(port, kind) for kind in kinds):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing bound port {port} within {timeout}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used; 0 once it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)
