"""Outside processes of the SIP benchmark (Kamailio, a sipp phone): started in their own
session, ready once their UDP port is taken, stopped with everything they started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import suppress
from typing import Any


def wait_udp_bound(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Return once something holds UDP ``port`` on loopback; raise if ``process`` exits first
    or nothing binds it within ``timeout`` seconds."""
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


def stop_group(process: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """Stop a process started with ``start_new_session`` and all it started: SIGTERM to its
    group, SIGKILL if it has not ended after ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
