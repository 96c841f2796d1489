"""Run sipp (Debian ``sip-tester``) as a caller or as an expert's phone, on loopback.

Each ``Sipp`` is one process with one committed scenario from ``expertline/sip/scenarios``;
it runs in a temp dir (sipp writes its logs next to the scenario) and is always stopped.
Exit codes (sipp's): 0 every call succeeded, 1 at least one failed, 97/99 stopped otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pytest

from expertline.processes import start_group, stop_group, wait_bound

SIPP = shutil.which("sipp")


def require_sipp() -> str:
    if SIPP is None:
        if os.environ.get("CI"):
            raise RuntimeError("sipp is required in CI (apt-get install -y sip-tester)")
        pytest.skip("sipp not installed (apt-get install -y sip-tester)")
    return SIPP


def scenario_path(name: str) -> Path:
    return Path(str(resources.files("expertline.sip") / "scenarios" / f"{name}.xml"))


def free_port() -> int:
    """A loopback port free for both UDP and TCP right now."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            tcp.close()
            udp.close()
        return port
    raise RuntimeError("no free loopback port")


@dataclass
class Sipp:
    """One sipp process. ``remote`` (host:port) makes it a client; without it, a server."""

    scenario: str
    workdir: Path
    remote: str | None = None
    service: str | None = None
    port: int = field(default_factory=free_port)
    calls: int = 1
    rate: float | None = None
    transport: str = "u1"  # u1: UDP, t1: TCP (one connection)
    pause_ms: int = 1000  # the length of a scenario's plain ``<pause/>`` (talk time)
    variables: dict[str, str] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)
    timeout: float = 30.0
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        src = scenario_path(self.scenario)
        local = self.workdir / src.name
        shutil.copyfile(src, local)
        cmd = [
            require_sipp(),
            "-sf",
            str(local),
            "-i",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-t",
            self.transport,
            "-m",
            str(self.calls),
            "-nostdin",
            "-trace_err",
            "-trace_logs",
            "-timeout",
            f"{int(self.timeout)}s",
            "-timeout_error",
            "-max_recv_loops",
            "10000",
            "-d",
            str(self.pause_ms),
        ]
        if self.rate is not None:
            cmd += ["-r", f"{self.rate:g}"]
        if self.service is not None:
            cmd += ["-s", self.service]
        for name, value in self.variables.items():
            cmd += ["-set", name, value]
        cmd += self.extra
        if self.remote is not None:
            cmd.append(self.remote)
        return cmd

    def start(self) -> Sipp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = start_group(
            self.command(), cwd=self.workdir, output=self.workdir / f"{self.scenario}.out"
        )
        if self.remote is None:
            self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 5.0) -> None:
        """A server is ready once its UDP/TCP port is taken."""
        assert self.process is not None
        kind = socket.SOCK_STREAM if self.transport.startswith("t") else socket.SOCK_DGRAM
        try:
            wait_bound(self.process, self.port, (kind,), timeout)
        except RuntimeError as e:
            raise RuntimeError(f"sipp {self.scenario}: {e}: {self.output()[-2000:]}") from e

    def wait(self, timeout: float | None = None) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout or self.timeout + 10)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"sipp {self.scenario} still running after {timeout}s\n{self.diagnostics()}"
            ) from None

    def stop(self) -> None:
        stop_group(self.process)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        path = self.workdir / f"{self.scenario}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def _files(self, suffix: str) -> list[Path]:
        return sorted(self.workdir.glob(f"{self.scenario}_*_{suffix}"))

    def logs(self) -> str:
        """What the scenario's ``<log>`` actions wrote."""
        return "".join(p.read_text(errors="replace") for p in self._files("logs.log"))

    def errors(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self._files("errors.log"))

    def diagnostics(self) -> str:
        return (
            f"--- sipp {self.scenario} errors ---\n{self.errors()[-3000:]}\n"
            f"--- output ---\n{self.output()[-1500:]}"
        )

    def assert_succeeded(self, timeout: float | None = None) -> None:
        code = self.wait(timeout)
        assert code == 0, f"sipp {self.scenario} exit code {code}\n{self.diagnostics()}"


class SippPool:
    """Every sipp started in a test, stopped at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Sipp] = []

    def phone(self, scenario: str, **options: object) -> Sipp:
        sipp = Sipp(scenario, self.workdir / f"phone{len(self.started)}", **options)  # type: ignore[arg-type]
        self.started.append(sipp.start())
        return sipp

    def caller(self, scenario: str, remote: str, service: str, **options: object) -> Sipp:
        sipp = Sipp(
            scenario,
            self.workdir / f"caller{len(self.started)}",
            remote=remote,
            service=service,
            **options,  # type: ignore[arg-type]
        )
        self.started.append(sipp.start())
        return sipp

    def stop_all(self) -> None:
        for sipp in self.started:
            sipp.stop()
