"""A throwaway Prosody XMPP server: generated config in a temp dir, free loopback ports.

Used by the presence integration tests and ``expertline bench xmpp`` (never by a node). The server runs in the
foreground as a child process; ``stop()`` ends it, ``restart()`` stops and starts it again on
the same ports with the same data (rosters survive), which is how tests cut the router's link.

Plain authentication without TLS is allowed because everything stays on loopback. Accounts
are registered with ``prosodyctl register`` (a few users) or written straight into the
``internal_plain`` store (``write_accounts``, for a thousand bench users in a second).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from expertline.net import free_port

DOMAIN = "example.test"
COMPONENT = "expertline.example.test"
COMPONENT_SECRET = "component-secret"


def prosody_available() -> bool:
    return shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None


def _encode_node(name: str) -> str:
    """Prosody's file-store escaping: anything but ``[a-zA-Z0-9]`` becomes ``%XX``."""
    return "".join(c if c.isalnum() and c.isascii() else f"%{ord(c):02x}" for c in name)


class ProsodyServer:
    """One Prosody process with a virtual host ``example.test`` and a component."""

    def __init__(self, directory: Path, domain: str = DOMAIN, component: str = COMPONENT) -> None:
        self.directory = directory
        self.domain = domain
        self.component = component
        self.component_secret = COMPONENT_SECRET
        self.c2s_port = free_port()
        self.component_port = free_port()
        self.data = directory / "data"
        self.config = directory / "prosody.cfg.lua"
        self.log_file = directory / "prosody.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.data.mkdir(parents=True, exist_ok=True)
        (directory / "certs").mkdir(exist_ok=True)
        self._write_config()

    def _write_config(self) -> None:
        d = self.directory
        self.config.write_text(
            f"""
run_as_root = true -- only matters when the tests run as root (containers)
pidfile = "{d / "prosody.pid"}"
data_path = "{self.data}"
certificates = "{d / "certs"}"
log = {{ info = "{self.log_file}"; error = "{d / "prosody.err"}" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.c2s_port} }}
c2s_direct_tls_ports = {{ }}
component_ports = {{ {self.component_port} }}
component_interface = "127.0.0.1"
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "carbons"; "register" }}
modules_disabled = {{ "posix"; "s2s"; "offline" }}
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = false
c2s_stanza_size_limit = 262144
VirtualHost "{self.domain}"
Component "{self.component}"
    component_secret = "{self.component_secret}"
"""
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        if self.process is not None:
            raise RuntimeError("prosody already running")
        out = open(self.directory / "prosody.stdout", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            ["prosody", "-F", "--config", str(self.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prosody exited at start:\n{self.tail()}")
            if self._listening(self.c2s_port) and self._listening(self.component_port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"prosody did not listen within {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used (Linux ``/proc``); 0 if unknown."""
        if self.process is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def tail(self, lines: int = 40) -> str:
        parts = []
        for name in ("prosody.stdout", "prosody.err", "prosody.log"):
            path = self.directory / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(parts)

    # -- accounts --------------------------------------------------------------------------

    def register(self, user: str, password: str) -> str:
        """Create an account with ``prosodyctl register``; returns the bare JID."""
        env = {**os.environ, "HOME": str(self.directory)}
        result = subprocess.run(
            ["prosodyctl", "--config", str(self.config), "register", user, self.domain, password],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"prosodyctl register {user} failed: {result.stderr or result.stdout}"
            )
        return f"{user}@{self.domain}"

    def write_accounts(self, accounts: Iterable[tuple[str, str]]) -> None:
        """Write accounts straight into the ``internal_plain`` store (before or while running:
        Prosody reads the file at each login)."""
        folder = self.data / _encode_node(self.domain) / "accounts"
        folder.mkdir(parents=True, exist_ok=True)
        for user, password in accounts:
            escaped = password.replace("\\", "\\\\").replace('"', '\\"')
            (folder / f"{_encode_node(user)}.dat").write_text(
                f'return {{\n\t["password"] = "{escaped}";\n}};\n'
            )

    def write_subscriptions(
        self, watcher: str, contacts: Iterable[str], group: str = "expertline"
    ) -> None:
        """Pre-provision rosters: ``watcher`` is subscribed to every contact's presence (and each
        contact's roster says so), as a shared-roster setup would do. Users are local names.

        Use before ``start()``: Prosody reads rosters at login and rewrites the whole file on
        every change, so a thousand subscription handshakes cost seconds each at the end."""
        folder = self.data / _encode_node(self.domain) / "roster"
        folder.mkdir(parents=True, exist_ok=True)
        watcher_jid = f"{watcher}@{self.domain}"
        items = []
        for contact in contacts:
            items.append(
                f'\t["{contact}@{self.domain}"] = {{ ["subscription"] = "to"; '
                f'["groups"] = {{ ["{group}"] = true; }}; }};'
            )
            (folder / f"{_encode_node(contact)}.dat").write_text(
                "return {\n"
                '\t[false] = { ["version"] = 1; ["pending"] = {}; };\n'
                f'\t["{watcher_jid}"] = {{ ["subscription"] = "from"; ["groups"] = {{}}; }};\n'
                "};\n"
            )
        (folder / f"{_encode_node(watcher)}.dat").write_text(
            "return {\n"
            '\t[false] = { ["version"] = 1; ["pending"] = {}; };\n' + "\n".join(items) + "\n};\n"
        )


@contextmanager
def running_prosody(directory: Path) -> Iterator[ProsodyServer]:
    """Start a Prosody in ``directory``; always stop it."""
    server = ProsodyServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
