"""Kamailio, the comparison: a stateless redirect server (the ceiling for redirect mode) or a
stateful proxy in front of one phone (what whole calls cost through a SIP proxy alone).

Each run writes its own ``kamailio.cfg`` into a work directory and runs Kamailio in the
foreground (``-DD -E``) on a loopback port. The integration tests have a Kamailio of their own
(``tests/support/kamailio.py``, the documented configuration); the benchmark does not depend
on the tests.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

from expertline.processes import start_group, stop_group, wait_bound

REDIRECT_CFG = """#!KAMAILIO
debug=0
log_stderror=yes
memdbg=5
memlog=5
children={children}
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="{mpath}"
loadmodule "sl.so"
loadmodule "textops.so"

request_route {{
    if (is_method("ACK")) {{
        exit;
    }}
    append_to_reply("Contact: <sip:1000@127.0.0.1:5999>\\r\\n");
    sl_send_reply("302", "Moved Temporarily");
    exit;
}}
"""


# A stateful proxy in front of one phone: what the same full calls cost through Kamailio.
PROXY_CFG = """#!KAMAILIO
debug=0
log_stderror=yes
memdbg=5
memlog=5
children={children}
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="{mpath}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    t_check_trans();
    record_route();
    $du = "sip:{phone}";
    t_relay();
    exit;
}}
"""


def kamailio_modules() -> str | None:
    """The directory of Kamailio's modules (Debian puts it under the multiarch triplet)."""
    for path in [*sorted(glob.glob("/usr/lib/*/kamailio/modules")), "/usr/lib/kamailio/modules"]:
        if Path(path, "sl.so").exists():
            return path
    return None


class Kamailio:
    """A throwaway Kamailio on a loopback port: a stateless redirect server, or (``phone``:
    host:port) a stateful proxy to that phone."""

    def __init__(
        self, workdir: Path, port: int, children: int = 2, phone: str | None = None
    ) -> None:
        self.workdir = workdir
        self.port = port
        self.children = children
        self.phone = phone
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def remote(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self, mpath: str) -> str:
        template = REDIRECT_CFG if self.phone is None else PROXY_CFG
        return template.format(
            children=self.children, port=self.port, mpath=mpath + "/", phone=self.phone
        )

    def start(self) -> None:
        binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
        mpath = kamailio_modules()
        if mpath is None or not Path(binary).exists():
            raise RuntimeError("kamailio is not installed (apt-get install -y kamailio)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "kamailio.cfg"
        cfg.write_text(self.config(mpath))
        check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"kamailio.cfg rejected: {check.stderr.decode()[-500:]}")
        command = [
            binary, "-f", str(cfg), "-DD", "-E", "-m", "64", "-M", "8",
            "-w", str(self.workdir), "-Y", str(self.workdir),
            "-P", str(self.workdir / "kamailio.pid"),
        ]  # fmt: skip
        self.process = start_group(command, output=self.workdir / "kamailio.log")
        wait_bound(self.process, self.port)

    def stop(self) -> None:
        stop_group(self.process)
