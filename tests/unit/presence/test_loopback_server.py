"""The lifecycle the throwaway XMPP servers share, against real sockets and real processes: a
small Python program stands in for the server (listens on the two ports, or fails, or ignores
SIGTERM, or starts a child of its own)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from expertline.net import port_open
from expertline.presence.loopback_server import LoopbackServer
from support.wait import eventually

SERVER = """
import signal, socket, subprocess, sys, time
mode, ports = sys.argv[1], sys.argv[2:]
if mode == "fail":
    print("bad configuration", flush=True)
    sys.exit(3)
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "with-child":
    print("child", subprocess.Popen(["sleep", "60"]).pid, flush=True)
listeners = []
for port in ports if mode != "deaf" else ():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(port)))
    listener.listen()
    listeners.append(listener)
print("ready", flush=True)
time.sleep(60)
"""


class StandIn(LoopbackServer):
    name = "stand-in"
    start_timeout = 10.0
    stop_timeout = 5.0

    def __init__(self, directory: Path, mode: str = "listen") -> None:
        super().__init__(directory)
        self.mode = mode

    def _launch(self) -> subprocess.Popen[bytes]:
        ports = [str(self.c2s_port), str(self.component_port)]
        return self._spawn([sys.executable, "-c", SERVER, self.mode, *ports])

    def _log_files(self) -> list[Path]:
        return [self.directory / "stand-in.stdout"]

    def output(self) -> str:
        return (self.directory / "stand-in.stdout").read_text()


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody has reaped yet does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_started_waits_for_both_listeners_and_always_stops(tmp_path: Path) -> None:
    server = StandIn(tmp_path)
    with server.started() as running:
        assert running is server and server.running
        assert port_open(server.c2s_port) and port_open(server.component_port)
        assert server.cpu_seconds() >= 0.0
        process = server.process
    assert process is not None and process.returncode == -signal.SIGTERM
    assert not server.running and server.process is None
    assert not port_open(server.c2s_port)
    assert server.cpu_seconds() == 0.0


def test_restart_comes_back_on_the_same_ports(tmp_path: Path) -> None:
    server = StandIn(tmp_path)
    with server.started():
        ports = (server.c2s_port, server.component_port)
        first = server.process
        server.restart()
        assert server.process is not first and server.running
        assert (server.c2s_port, server.component_port) == ports
        assert port_open(server.c2s_port) and port_open(server.component_port)


def test_a_second_start_is_refused(tmp_path: Path) -> None:
    with StandIn(tmp_path).started() as server, pytest.raises(RuntimeError, match="already"):
        server.start()


def test_a_server_that_exits_at_start_says_why(tmp_path: Path) -> None:
    server = StandIn(tmp_path, mode="fail")
    with pytest.raises(RuntimeError, match="stand-in exited at start") as raised:
        server.start()
    assert "bad configuration" in str(raised.value)


def test_a_server_that_never_listens_is_stopped_at_the_deadline(tmp_path: Path) -> None:
    server = StandIn(tmp_path, mode="deaf")
    with pytest.raises(RuntimeError, match=r"did not listen within 0\.3s"):
        server.start(timeout=0.3)
    assert server.process is None


def test_stop_kills_the_group_when_sigterm_is_ignored(tmp_path: Path) -> None:
    server = StandIn(tmp_path, mode="ignore-term")
    server.start()
    process = server.process
    server.stop(timeout=0.3)
    assert process is not None and process.returncode == -signal.SIGKILL
    assert server.process is None


def test_kill_ends_the_server_and_its_children_at_once(tmp_path: Path) -> None:
    server = StandIn(tmp_path, mode="with-child")
    server.start()
    child = int(eventually(lambda: server.output().split()[1], timeout=5))
    assert _alive(child)
    process = server.process
    server.kill()
    assert process is not None and process.returncode == -signal.SIGKILL
    assert not server.running and server.process is None
    eventually(lambda: not _alive(child), timeout=5)
    server.kill()  # nothing left to end: no error
