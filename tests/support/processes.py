"""Run ``expertline`` as a real process in tests, on free ports, always stopped afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from expertline.net import free_port
from support.wait import eventually

__all__ = [
    "ServerProcess",
    "cli",
    "expertline_cmd",
    "free_port",
    "running_server",
]


def expertline_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "expertline", *args]


def cli(
    *args: str, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        expertline_cmd(*args),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"expertline {' '.join(args)} failed ({result.returncode}): {result.stderr}"
        )
    return result


class ServerProcess:
    def __init__(self, proc: subprocess.Popen[str], base_url: str, log_path: Path) -> None:
        self.proc = proc
        self.base_url = base_url
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)


@contextmanager
def running_server(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, ready_path: str = "/healthz"
) -> Iterator[ServerProcess]:
    """Start ``expertline serve`` on a free port and wait until it answers."""
    port = free_port()
    log_path = tmp_path / f"serve-{port}.log"
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        expertline_cmd("serve", "--http", f"127.0.0.1:{port}", *args),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log_path)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early ({proc.returncode}):\n{server.log()}")
            return httpx.get(server.base_url + ready_path, timeout=2).status_code < 500

        eventually(up, timeout=30, interval=0.1)
        yield server
    finally:
        server.stop()
        log_file.close()
