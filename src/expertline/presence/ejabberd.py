"""A throwaway ejabberd: the Debian default configuration, moved onto free loopback ports.

Used by the presence integration tests and ``expertline bench xmpp`` (never by a node). The
configuration is the package's ``/etc/ejabberd/ejabberd.yml`` with its defaults kept (notably
``mod_pres_counter: {count: 5, interval: 60}`` and the ``c2s_shaper``), and only what a
loopback instance must change replaced: the virtual host, the listeners (client, component,
an HTTP API for accounts, on free ports; no TLS unless asked for), and no certificates.

The server runs in the foreground as a child process (``erl`` started the way ``ejabberdctl
foreground`` starts it) with its own Mnesia spool and log directory. Each instance has its
own Erlang node name and its own distribution port, so it never asks the machine's ``epmd``
and never meets another instance (or the system service). ``stop()`` ends it (SIGTERM, the
VM's orderly shutdown); ``restart()`` starts it again with the same data.

Accounts are made through ``mod_http_api`` (``/api/register``), opened to loopback by one
added ``api_permissions`` entry.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from expertline.net import free_port, port_open
from expertline.presence.loopback_server import COMPONENT, DOMAIN, LoopbackServer

DEBIAN_CONFIG = Path("/etc/ejabberd/ejabberd.yml")
ERL = "/usr/bin/erl"
ERL_LIBS = "/usr/lib/x86_64-linux-gnu"  # where Debian puts ejabberd and its dependencies


def ejabberd_available() -> bool:
    return (
        shutil.which("ejabberdctl") is not None
        and Path(ERL).exists()
        and DEBIAN_CONFIG.exists()
        and any(Path(ERL_LIBS).glob("ejabberd-*"))
    )


class EjabberdServer(LoopbackServer):
    """One ejabberd node with a virtual host ``example.test`` and a component listener."""

    name = "ejabberd"
    start_timeout = 60.0
    stop_timeout = 20.0  # SIGTERM is the VM's init:stop(), which closes Mnesia cleanly
    poll_interval = 0.1

    def __init__(
        self,
        directory: Path,
        domain: str = DOMAIN,
        component: str = COMPONENT,
        overrides: Mapping[str, Any] | None = None,
        c2s_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(directory, domain, component)
        self.http_port = free_port()
        self.dist_port = free_port()
        self.node = f"expertline-ej-{secrets.token_hex(4)}"
        self.cookie = secrets.token_hex(16)
        self.spool = directory / "spool"
        self.logs = directory / "logs"
        self.config = directory / "ejabberd.yml"
        self.spool.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._overrides = dict(overrides or {})
        self._c2s_options = dict(c2s_options or {})
        self._write_config()

    def settings(self) -> dict[str, Any]:
        """The configuration in effect (the Debian default with the loopback changes)."""
        config: dict[str, Any] = yaml.safe_load(DEBIAN_CONFIG.read_text())
        config["hosts"] = [self.domain]
        config.pop("certfiles", None)  # the package's self-signed certificate is not ours
        config["loglevel"] = "info"
        c2s = {
            "port": self.c2s_port,
            "ip": "127.0.0.1",
            "module": "ejabberd_c2s",
            "max_stanza_size": 262144,
            "shaper": "c2s_shaper",
            "access": "c2s",
            **self._c2s_options,
        }
        config["listen"] = [
            c2s,
            {
                "port": self.component_port,
                "ip": "127.0.0.1",
                "module": "ejabberd_service",
                "hosts": {self.component: {"password": self.component_secret}},
            },
            {
                "port": self.http_port,
                "ip": "127.0.0.1",
                "module": "ejabberd_http",
                "request_handlers": {"/api": "mod_http_api"},
            },
        ]
        # Accounts are made over the API from loopback (the default rules want a signed-in
        # admin for that, and this server has none).
        config.setdefault("api_permissions", {})["loopback accounts"] = {
            "who": {"ip": "127.0.0.1/8"},
            "what": [
                "register",
                "unregister",
                "registered_users",
                "get_roster",
                "status",
                "srg_create",
                "srg_user_add",
                "add_rosteritem",
            ],
        }
        modules: dict[str, Any] = config["modules"]
        modules.pop("mod_mqtt", None)  # its listener is gone
        modules.pop("mod_stun_disco", None)  # so is STUN's
        for key, value in self._overrides.items():
            if key == "modules":
                for name, options in value.items():
                    if options is None:
                        modules.pop(name, None)
                    else:
                        modules[name] = options
            elif isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}  # one level: add or replace entries
            else:
                config[key] = value
        return config

    def _write_config(self) -> None:
        self.config.write_text(yaml.safe_dump(self.settings(), sort_keys=False))

    @property
    def pres_counter(self) -> Mapping[str, Any] | None:
        return self.settings()["modules"].get("mod_pres_counter")

    # -- lifecycle -------------------------------------------------------------------------

    def _command(self) -> list[str]:
        return [
            ERL,
            "-sname",
            self.node,
            "-setcookie",
            self.cookie,
            "-start_epmd",
            "false",
            "-erl_epmd_port",
            str(self.dist_port),
            "-kernel",
            "inet_dist_use_interface",
            "{127,0,0,1}",
            "+K",
            "true",
            "+P",
            "250000",
            "-env",
            "ERL_CRASH_DUMP_BYTES",
            "0",
            "-noinput",
            "-mnesia",
            "dir",
            f'"{self.spool}"',
            "-s",
            "ejabberd",
        ]

    def _launch(self) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "HOME": str(self.directory),
            "EJABBERD_CONFIG_PATH": str(self.config),
            "EJABBERD_LOG_PATH": str(self.logs / "ejabberd.log"),
            "ERL_CRASH_DUMP": str(self.logs / "erl_crash.dump"),
            "ERL_LIBS": ERL_LIBS,
            "ERL_MAX_PORTS": "32000",
            "ERL_MAX_ETS_TABLES": "1400",
            "ERL_DIST_PORT": str(self.dist_port),
        }
        return self._spawn(self._command(), cwd=self.spool, env=env)

    def _ready(self) -> bool:
        ports = (self.c2s_port, self.component_port, self.http_port)
        return all(map(port_open, ports)) and self._api_answers()

    def _api_answers(self) -> bool:
        try:
            response = httpx.post(f"{self.api_url}/status", json={}, timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and "started" in response.text

    def _log_files(self) -> list[Path]:
        return [self.directory / "ejabberd.stdout", self.logs / "ejabberd.log"]

    # -- accounts --------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api"

    def api(self, command: str, **arguments: object) -> Any:
        """Call one ``mod_http_api`` command; an error answer raises."""
        response = httpx.post(f"{self.api_url}/{command}", json=arguments, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(
                f"ejabberd {command} failed ({response.status_code}): {response.text}"
            )
        return response.json()

    def register(self, user: str, password: str) -> str:
        """Create an account; returns the bare JID."""
        self.api("register", user=user, host=self.domain, password=password)
        return f"{user}@{self.domain}"

    def write_accounts(self, accounts: list[tuple[str, str]]) -> None:
        for user, password in accounts:
            self.register(user, password)

    def shared_roster_group(
        self, group: str, members: list[str], display: list[str] | None = None
    ) -> None:
        """A ``mod_shared_roster`` group: its members have the members of the ``display``
        groups (default: its own) in their rosters, subscriptions pre-approved."""
        self.api(
            "srg_create",
            group=group,
            host=self.domain,
            label=group,
            description=group,
            display=[group] if display is None else display,
        )
        self.shared_roster_add(group, members)

    def shared_roster_add(self, group: str, members: list[str]) -> None:
        for user in members:
            self.api(
                "srg_user_add", user=user, host=self.domain, group=group, grouphost=self.domain
            )

    def add_roster_item(self, user: str, contact: str, subscription: str) -> None:
        """Put ``contact`` (a bare JID, a component's domain too) in ``user``'s roster with
        the given subscription state, as an earlier approval leaves it."""
        name, _, host = contact.rpartition("@")
        self.api(
            "add_rosteritem",
            localuser=user,
            localhost=self.domain,
            user=name,
            host=host,
            nick=contact,
            group="",
            subs=subscription,
        )

    def roster_of(self, user: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("get_roster", user=user, server=self.domain)
        return result
