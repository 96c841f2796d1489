"""Run Kamailio (Debian ``kamailio``) in front of the SIP front, on loopback.

Each ``Kamailio`` is one foreground process (``-DD -E``) with a generated ``kamailio.cfg`` in
its own directory, on a free loopback port (UDP and TCP), always stopped by its own process
group. ``documented_config`` is the example ``kamailio.cfg`` of docs/sip.md, taken from the
document's text with only the addresses (and, for fast tests, the tm timers) substituted.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from expertline.processes import start_group, stop_group, wait_bound
from support.sipp import free_port

DOCS_SIP = Path(__file__).resolve().parents[2] / "docs" / "sip.md"
DOC_PROXY = "127.0.0.1:5060"  # where the documented Kamailio listens
DOC_EXPERTLINE = "127.0.0.1:5070"  # where it finds expertline


def kamailio_binary() -> str | None:
    return shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
    )


def require_kamailio() -> str:
    binary = kamailio_binary()
    if binary is None:
        if os.environ.get("CI"):
            raise RuntimeError("kamailio is required in CI (apt-get install -y kamailio)")
        pytest.skip("kamailio not installed (apt-get install -y kamailio)")
    return binary


def documented_config(
    port: int,
    expertline: str,
    transport: str = "udp",
    timers: dict[str, int] | None = None,
) -> str:
    """The ``kamailio.cfg`` of docs/sip.md listening on ``port``, relaying to ``expertline``
    (host:port) over ``transport``; ``timers``: tm parameters (ms) to set instead of the
    documented values (each must be in the document)."""
    blocks = re.findall(r"```[^\n]*\n(#!KAMAILIO\n.*?)```", DOCS_SIP.read_text(), re.S)
    assert len(blocks) == 1, "docs/sip.md must hold exactly one kamailio.cfg"
    text = blocks[0]
    assert DOC_PROXY in text and DOC_EXPERTLINE in text, "the documented addresses changed"
    text = text.replace(DOC_PROXY, f"127.0.0.1:{port}")
    text = text.replace(f"{DOC_EXPERTLINE};transport=udp", f"{expertline};transport={transport}")
    for name, value in (timers or {}).items():
        pattern = rf'(modparam\("tm", "{name}", )\d+\)'
        text, found = re.subn(pattern, rf"\g<1>{value})", text)
        assert found == 1, f"tm parameter {name} is not in the documented kamailio.cfg"
    return text


@dataclass
class Kamailio:
    """One Kamailio process with ``config`` (its whole text); ``defines``: ``-A`` names."""

    workdir: Path
    config: str
    port: int
    defines: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    started: float = field(default=0.0)

    @property
    def remote(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _command(self, binary: str, *extra: str) -> list[str]:
        cmd = [binary, "-f", str(self.workdir / "kamailio.cfg")]
        for name in self.defines:
            cmd += ["-A", name]
        return [*cmd, *extra]

    def start(self) -> Kamailio:
        binary = require_kamailio()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "kamailio.cfg").write_text(self.config)
        check = subprocess.run(self._command(binary, "-c"), capture_output=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"kamailio.cfg rejected: {check.stderr.decode()[-1500:]}")
        command = self._command(
            binary, "-DD", "-E", "-m", "32", "-M", "8",
            "-w", str(self.workdir), "-Y", str(self.workdir),
            "-P", str(self.workdir / "kamailio.pid"),
        )  # fmt: skip
        self.process = start_group(command, output=self.workdir / "kamailio.log")
        self.started = time.monotonic()
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 10.0) -> None:
        """Ready once its UDP and TCP ports are taken."""
        assert self.process is not None
        kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM)
        try:
            wait_bound(self.process, self.port, kinds, timeout)
        except RuntimeError as e:
            raise RuntimeError(f"kamailio: {e}: {self.log()[-2000:]}") from e

    def stop(self) -> None:
        stop_group(self.process, timeout=10)

    def log(self) -> str:
        path = self.workdir / "kamailio.log"
        return path.read_text(errors="replace") if path.exists() else ""


class KamailioPool:
    """Every Kamailio started in a test, stopped at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Kamailio] = []

    def start(self, config: str, port: int, defines: tuple[str, ...] = ()) -> Kamailio:
        workdir = self.workdir / f"kamailio{len(self.started)}"
        kamailio = Kamailio(workdir, config, port, defines)
        self.started.append(kamailio)
        return kamailio.start()

    def documented(
        self,
        expertline: str,
        transport: str = "udp",
        timers: dict[str, int] | None = None,
        defines: tuple[str, ...] = (),
    ) -> Kamailio:
        """The documented configuration in front of ``expertline`` (host:port)."""
        port = free_port()
        return self.start(documented_config(port, expertline, transport, timers), port, defines)

    def stop_all(self) -> None:
        for kamailio in self.started:
            kamailio.stop()
