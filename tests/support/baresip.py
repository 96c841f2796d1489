"""Run baresip (Debian ``baresip``) as an expert's phone or as a caller, headless, on loopback.

As a phone it answers every call by itself (account parameter ``answermode=auto``), sends a sine
tone as its audio (no sound card: ``ausine`` in, no player) and writes what happened to its
output ("Call established", "session closed"). One process per phone, in its own directory
(``-f``: ``config`` and ``accounts`` generated there), on a free loopback port (UDP and TCP);
always stopped by its own process group. As a caller it dials at start (``-e "/dial URI"``)
and quits after ``quit_after`` seconds (``-t``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from expertline.processes import start_group, stop_group
from support.sipp import free_port

BARESIP = shutil.which("baresip")
MODULES = ("/usr/lib/baresip/modules", "/usr/local/lib/baresip/modules")

CONFIG = """\
poll_method\t\tepoll
sip_listen\t\t127.0.0.1:{port}
module_path\t\t{modules}
module\t\t\tg711.so
module\t\t\tausine.so
module_app\t\taccount.so
module_app\t\tmenu.so
audio_source\t\tausine,440
ausrc_srate\t\t48000
ausrc_channels\t\t2
"""


def require_baresip() -> str:
    modules = next((m for m in MODULES if Path(m, "ausine.so").exists()), None)
    if BARESIP is None or modules is None:
        if os.environ.get("CI"):
            raise RuntimeError("baresip is required in CI (apt-get install -y baresip)")
        pytest.skip("baresip not installed (apt-get install -y baresip)")
    return modules


@dataclass
class BaresipPhone:
    """One baresip answering as ``sip:{user}@127.0.0.1:{port}``; with ``dial``, a caller
    that calls that URI at once."""

    workdir: Path
    user: str = "1001"
    port: int = 0
    dial: str | None = None
    quit_after: int = 20
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.port}"

    def start(self) -> BaresipPhone:
        modules = require_baresip()
        assert BARESIP is not None
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "config").write_text(CONFIG.format(port=self.port, modules=modules))
        (self.workdir / "accounts").write_text(f"<{self.uri}>;regint=0;answermode=auto\n")
        command = [BARESIP, "-f", str(self.workdir)]
        if self.dial is not None:
            command += ["-e", f"/dial {self.dial}", "-t", str(self.quit_after)]
        self.process = start_group(command, cwd=self.workdir, output=self.workdir / "baresip.out")
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"baresip exited while starting: {self.output()[-2000:]}")
            if "baresip is ready" in self.output():
                return
            time.sleep(0.05)
        raise RuntimeError(f"baresip not ready after {timeout}s: {self.output()[-2000:]}")

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        path = self.workdir / "baresip.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        stop_group(self.process)
