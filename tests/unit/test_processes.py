"""Child processes in their own session, against real processes and real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from expertline.net import free_port, port_open, port_taken
from expertline.processes import cpu_seconds, kill_group, start_group, stop_group, wait_bound
from support.wait import eventually

# Prints the pid of a child it starts, then waits; ignores SIGTERM when asked to.
PARENT = """
import signal, subprocess, sys, time
if sys.argv[1] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(subprocess.Popen(["sleep", "60"]).pid, flush=True)
time.sleep(60)
"""

# Binds a UDP port given as its argument, says so, then waits.
UDP_SERVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
print("bound", flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody has reaped yet does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _parent(tmp_path: Path, mode: str = "plain") -> tuple[subprocess.Popen[bytes], int]:
    out = tmp_path / "parent.out"
    process = start_group([sys.executable, "-c", PARENT, mode], output=out)
    child = int(eventually(lambda: out.read_text().split()[0], timeout=10))
    return process, child


def test_port_open_sees_a_listening_socket_and_not_a_closed_one() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_open(port)
    assert not port_open(port)


def test_port_taken_sees_a_bound_udp_socket_and_not_a_released_one() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        assert port_taken(port)
    assert not port_taken(port)


def test_start_group_writes_or_appends_output(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("old\n")
    start_group(["echo", "one"], output=out).wait(5)
    assert out.read_text() == "one\n"
    start_group(["echo", "two"], output=out, append=True).wait(5)
    assert out.read_text() == "one\ntwo\n"


def test_start_group_leads_a_new_session(tmp_path: Path) -> None:
    process = start_group(["sleep", "60"])
    try:
        assert os.getsid(process.pid) == process.pid != os.getsid(0)
    finally:
        kill_group(process, timeout=5)


def test_stop_group_ends_the_leader_and_what_it_started(tmp_path: Path) -> None:
    process, child = _parent(tmp_path)
    assert _alive(child)
    stop_group(process, timeout=5)
    assert process.returncode == -signal.SIGTERM
    eventually(lambda: not _alive(child), timeout=5)
    stop_group(process)  # already ended: nothing to do


def test_stop_group_kills_a_leader_that_ignores_sigterm(tmp_path: Path) -> None:
    process, child = _parent(tmp_path, "ignore-term")
    stop_group(process, timeout=0.3)
    assert process.returncode == -signal.SIGKILL
    eventually(lambda: not _alive(child), timeout=5)


def test_kill_group_ends_the_leader_and_what_it_started(tmp_path: Path) -> None:
    process, child = _parent(tmp_path)
    kill_group(process, timeout=5)
    assert process.returncode == -signal.SIGKILL
    eventually(lambda: not _alive(child), timeout=5)


def test_wait_bound_returns_once_the_port_is_bound(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    out = tmp_path / "udp.out"
    process = start_group([sys.executable, "-c", UDP_SERVER, str(port)], output=out)
    try:
        wait_bound(process, port, timeout=10)
        assert port_taken(port)
        assert "bound" in out.read_text()
    finally:
        stop_group(process)


def test_wait_bound_raises_when_the_process_exits_first() -> None:
    process = start_group([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exited with 3 while starting"):
        wait_bound(process, free_port(socket.SOCK_DGRAM), timeout=10)


def test_wait_bound_gives_up_at_its_deadline() -> None:
    process = start_group(["sleep", "60"])
    try:
        with pytest.raises(RuntimeError, match=r"within 0\.2s"):
            wait_bound(process, free_port(socket.SOCK_DGRAM), timeout=0.2)
    finally:
        stop_group(process)


def test_cpu_seconds_reads_user_and_system_time() -> None:
    before = time.process_time()
    measured = cpu_seconds(os.getpid())
    after = time.process_time()
    assert before - 0.05 <= measured <= after + 0.05


def test_cpu_seconds_of_no_such_process_is_zero() -> None:
    process = subprocess.Popen(["true"])
    process.wait(5)  # reaped: the pid is gone
    assert cpu_seconds(process.pid) == 0.0
