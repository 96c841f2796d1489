"""What the throwaway XMPP servers (``prosody.py``, ``ejabberd.py``) have in common.

Each runs one server in the foreground as a child process in its own session, on free loopback
ports, with its files in one directory. This module holds the lifecycle they share: start and
wait until the server listens (bounded), stop with SIGTERM and then SIGKILL to the process
group, kill at once as a crashed host would, CPU time, and the log tail that
goes into every start error. A subclass says how to launch its server, when it is ready, and
which files to show.
"""

from __future__ import annotations

import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Self

from expertline.net import free_port, port_open
from expertline.processes import cpu_seconds, kill_group, start_group

DOMAIN = "example.test"
COMPONENT = "expertline.example.test"
COMPONENT_SECRET = "component-secret"


class LoopbackServer(ABC):
    """One server process with a virtual host and a component, on free loopback ports."""

    name: ClassVar[str]  # the program's name, in file names and errors
    start_timeout: ClassVar[float] = 15.0
    stop_timeout: ClassVar[float] = 10.0
    poll_interval: ClassVar[float] = 0.05

    def __init__(self, directory: Path, domain: str = DOMAIN, component: str = COMPONENT) -> None:
        self.directory = directory
        self.domain = domain
        self.component = component
        self.component_secret = COMPONENT_SECRET
        self.c2s_port = free_port()
        self.component_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def _launch(self) -> subprocess.Popen[bytes]:
        """Start the server process (with ``_spawn``)."""

    @abstractmethod
    def _log_files(self) -> list[Path]:
        """The files ``tail()`` shows, in order."""

    def _ready(self) -> bool:
        """Whether the started server serves; by default, when both listeners accept."""
        return port_open(self.c2s_port) and port_open(self.component_port)

    def _spawn(
        self, command: list[str], cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Run ``command`` in its own session, its output appended to ``<name>.stdout``."""
        output = self.directory / f"{self.name}.stdout"
        return start_group(command, output=output, append=True, cwd=cwd, env=env)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float | None = None) -> None:
        """Start the server and wait until it is ready; a server that exits or is not ready
        within ``timeout`` seconds raises, with the tail of its logs."""
        if self.process is not None:
            raise RuntimeError(f"{self.name} already running")
        timeout = self.start_timeout if timeout is None else timeout
        self.process = self._launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.tail()}")
            if self._ready():
                return
            time.sleep(self.poll_interval)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen within {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM (the server's orderly shutdown); SIGKILL to the group after ``timeout``."""
        timeout = self.stop_timeout if timeout is None else timeout
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc, timeout)

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crashed or unplugged host would."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            kill_group(proc)

    def restart(self) -> None:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        self.start()

    @contextmanager
    def started(self) -> Iterator[Self]:
        """Start the server; always stop it."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used; 0 if unknown."""
        return 0.0 if self.process is None else cpu_seconds(self.process.pid)

    def tail(self, lines: int = 40) -> str:
        parts = []
        for path in self._log_files():
            if path.exists():
                text = path.read_text(errors="replace")
                parts.append(f"--- {path.name}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)
