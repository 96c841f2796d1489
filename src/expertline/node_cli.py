"""``expertline serve`` and ``expertline demo``."""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from sqlalchemy import Engine

from expertline.cli_support import GLOBALS, fail, out
from expertline.settings import Settings, parse_host_port


def register(app: typer.Typer) -> None:

    @app.command("serve")
    def serve(
        role: Annotated[
            str | None, typer.Option(help="runtime | reporting | admin | all (default all)")
        ] = None,
        node: Annotated[str | None, typer.Option(help="Node name (default: host name).")] = None,
        http: Annotated[
            str | None, typer.Option(help="HTTP listen address HOST:PORT (default 127.0.0.1:8080).")
        ] = None,
        sip: Annotated[
            str | None, typer.Option(help="SIP listen address HOST:PORT (UDP and TCP).")
        ] = None,
        sip_mode: Annotated[
            str | None, typer.Option(help="redirect | proxy (default redirect).")
        ] = None,
        sip_trusted: Annotated[
            str | None,
            typer.Option(
                help="Peers that may attach a SIP call to an existing task: addresses or "
                "networks, comma-separated (e.g. 10.0.0.0/8,127.0.0.1)."
            ),
        ] = None,
        sip_attach_key_env: Annotated[
            str | None,
            typer.Option(
                help="Environment variable holding the attach key; unset: SIP calls never "
                "attach to an existing task."
            ),
        ] = None,
        sip_targets: Annotated[
            str | None,
            typer.Option(
                help="Hosts the SIP front may call besides the experts' phone hosts: names, "
                "*.domain, addresses or networks, comma-separated."
            ),
        ] = None,
        sip_refresh: Annotated[
            float | None,
            typer.Option(
                help="Seconds between the 182 Queued a waiting SIP caller gets (default 60; "
                "keep it below an upstream proxy's INVITE timer)."
            ),
        ] = None,
        sip_upstream_lifetime: Annotated[
            float | None,
            typer.Option(
                help="INVITE lifetime of the SIP proxy in front, in seconds (default 180, "
                "Kamailio's max_inv_lifetime; 0: off): a CANCEL without a Reason at that age "
                "is recorded as the proxy's timer (TCD 1), not the caller's abandon."
            ),
        ] = None,
        presence: Annotated[
            bool | None,
            typer.Option(
                "--presence/--no-presence", help="Connect the configured presence sources."
            ),
        ] = None,
        log_level: Annotated[
            str | None, typer.Option(help="debug | info | warning | error")
        ] = None,
        log_format: Annotated[str | None, typer.Option(help="text | json")] = None,
    ) -> None:
        """Run a node: HTTP API, routing runtime, presence, SIP, reporting (per role)."""
        settings = GLOBALS.settings(
            role=role,
            node=node,
            http=http,
            sip=sip,
            sip_mode=sip_mode,
            sip_trusted=sip_trusted,
            sip_attach_key_env=sip_attach_key_env,
            sip_targets=sip_targets,
            sip_refresh=sip_refresh,
            sip_upstream_lifetime=sip_upstream_lifetime,
            presence=presence,
            log_level=log_level,
            log_format=log_format,
        )
        _run(settings, fail)

    @app.command("demo")
    def demo(
        config: Annotated[
            Path, typer.Option(help="Configuration YAML to import when the database has none.")
        ] = Path("examples/demo.yaml"),
        http: Annotated[
            str | None,
            typer.Option(help="HTTP listen address HOST:PORT (default 127.0.0.1:8080)."),
        ] = None,
    ) -> None:
        """Run on embedded defaults: SQLite in the data directory, the demo configuration, an admin token.

        The demo connects no XMPP server: experts set their presence over REST. Its admin token
        is kept in <data-dir>/demo-admin.token and printed at every start. A start that fails
        (busy port, database in use) changes nothing.
        """
        # A node's parts are imported by the commands that run one, not by every command.
        from expertline.config.store import current_version, import_file
        from expertline.node import StartupError

        settings = GLOBALS.settings(http=http, presence=False)
        host, port = parse_host_port(settings.http)

        def setup(engine: Engine) -> None:
            # Runs once the port is bound and the database claimed: only now is it changed.
            if current_version(engine) == 0:
                if not config.exists():
                    raise StartupError(f"demo configuration {config} not found")
                import_file(engine, config, actor=f"cli:{getpass.getuser()}")
                out.print(f"imported {config}", highlight=False)
            token = demo_token(engine, settings.data_dir)
            print(
                f"expertline demo on http://{host}:{port} "
                f"(data: {settings.data_dir}; presence over REST)"
            )
            print(
                f'try: curl -H "Authorization: Bearer {token}" http://{host}:{port}/api/v1/experts'
            )
            print(f"admin token (kept in {settings.data_dir / DEMO_TOKEN_FILE}):")
            print(token, flush=True)

        _run(settings, fail, setup)


DEMO_TOKEN = "demo-admin"
DEMO_TOKEN_FILE = "demo-admin.token"


def demo_token(engine: Engine, data_dir: Path) -> str:
    """The demo's one admin token: the one kept in ``<data_dir>/demo-admin.token`` while it is
    live, else a new one written there (mode 0600) in place of any earlier demo token."""
    from expertline.security.tokens import create_token, list_tokens, revoke_token, verify_token

    path = data_dir / DEMO_TOKEN_FILE
    with contextlib.suppress(FileNotFoundError):
        kept = path.read_text(encoding="ascii").strip()
        info = verify_token(engine, kept) if kept else None
        if info is not None and info.name == DEMO_TOKEN and info.role == "admin":
            return kept
    if any(t.name == DEMO_TOKEN and t.revoked_at is None for t in list_tokens(engine)):
        revoke_token(engine, DEMO_TOKEN)  # lost or not ours: one demo token at a time
    token = create_token(engine, DEMO_TOKEN, "admin")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        os.fchmod(fd, 0o600)
        file.write(token + "\n")
    return token


def _run(
    settings: Settings,
    fail: Callable[[str], NoReturn],
    setup: Callable[[Engine], None] | None = None,
) -> None:
    from expertline.logs import setup_logging
    from expertline.node import StartupError, serve

    setup_logging(settings.log_level, settings.log_format)
    try:
        code = serve(settings, setup)
    except StartupError as exc:
        fail(str(exc))
    raise typer.Exit(code)
