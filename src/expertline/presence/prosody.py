"""A throwaway Prosody XMPP server: generated config in a temp dir, free loopback ports.

Used by the presence integration tests and ``expertline bench xmpp`` (never by a node). The
server runs in the foreground as a child process (the lifecycle is ``loopback_server``'s);
``stop()`` ends it, ``kill()`` ends it at once as a crashed host would, ``restart()`` stops and
starts it again on the same ports with the same data (rosters survive), which is how tests cut
the router's link.

Plain authentication without TLS is allowed because everything stays on loopback. Accounts
are registered with ``prosodyctl register`` (a few users) or written straight into the
``internal_plain`` store (``write_accounts``, for a thousand bench users in a second).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from expertline.presence.loopback_server import COMPONENT, DOMAIN, LoopbackServer


def prosody_available() -> bool:
    return shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None


def _encode_node(name: str) -> str:
    """Prosody's file-store escaping: anything but ``[a-zA-Z0-9]`` becomes ``%XX``."""
    return "".join(c if c.isalnum() and c.isascii() else f"%{ord(c):02x}" for c in name)


class ProsodyServer(LoopbackServer):
    """One Prosody process with a virtual host ``example.test`` and a component."""

    name = "prosody"

    def __init__(self, directory: Path, domain: str = DOMAIN, component: str = COMPONENT) -> None:
        super().__init__(directory, domain, component)
        self.data = directory / "data"
        self.config = directory / "prosody.cfg.lua"
        self.log_file = directory / "prosody.log"
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

    def _launch(self) -> subprocess.Popen[bytes]:
        return self._spawn(["prosody", "-F", "--config", str(self.config)])

    def _log_files(self) -> list[Path]:
        d = self.directory
        return [d / "prosody.stdout", d / "prosody.err", self.log_file]

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
