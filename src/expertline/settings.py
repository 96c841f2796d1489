"""Layered settings: built-in defaults < settings file < environment (``EXPERTLINE_*``) < flags.

The settings file is TOML (``--settings FILE``, ``EXPERTLINE_SETTINGS``, or
``expertline.toml`` in the working directory). It holds *where and how* the process runs; the
routing configuration (experts, queues...) lives in the database and is imported from YAML.
Secrets are never read from files: only environment variables named in the configuration.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from expertline.feeds.targets import RecordFeedTarget, check_unique
from expertline.ha.decide import LeaseTimes

Role = Literal["runtime", "reporting", "admin", "all"]
SipMode = Literal["redirect", "proxy"]


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "expertline"


def settings_file() -> Path | None:
    explicit = os.environ.get("EXPERTLINE_SETTINGS")
    if explicit:
        return Path(explicit)
    local = Path("expertline.toml")
    return local if local.exists() else None


class Settings(BaseSettings):
    """Everything a node needs to start. Field names map to ``EXPERTLINE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="EXPERTLINE_", extra="forbid")

    data_dir: Path = Field(default_factory=default_data_dir)
    db: str | None = None
    reporting_db: str | None = None
    node: str = Field(default_factory=lambda: os.uname().nodename)
    role: Role = "all"
    http: str = "127.0.0.1:8080"
    sip: str | None = None
    sip_mode: SipMode = "redirect"
    # SIP trust (docs/sip.md): peers that may attach a call to an existing task (addresses or
    # networks), the environment variable holding the attach key (unset: attaching is off), and
    # hosts the front may call besides the experts' phone hosts (proxy mode). Lists may be
    # given comma-separated (flags, environment).
    sip_trusted: list[str] | str = Field(default_factory=list)
    sip_attach_key_env: str | None = None
    sip_targets: list[str] | str = Field(default_factory=list)
    # Seconds between the 182 Queued a waiting caller gets (keeps an upstream proxy's INVITE
    # timer, e.g. Kamailio's fr_inv_timer or Timer C, from giving up): below the proxy's timer.
    sip_refresh: float = Field(default=60.0, ge=1.0, le=3600.0)
    # The INVITE lifetime of the proxy in front (Kamailio's max_inv_lifetime, 180 s by
    # default): a CANCEL without a Reason that a proxy relays at that age is the proxy's timer,
    # not the caller (Kamailio's own timer CANCEL carries none). 0: never infer it.
    sip_upstream_lifetime: float = Field(default=180.0, ge=0.0, le=86400.0)
    # The address people reach this node's pages at (behind a proxy: its public URL); the
    # other node of a pair links to it. Default: http://<http>.
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/\S*)?$")
    presence: bool = True  # connect the configured presence sources (XMPP); off: REST presence only
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    # High availability (PostgreSQL), see ``ha/decide.py`` and docs/operations.md: the
    # active node renews its lease every ``ha_renew`` seconds, gives a database call up after
    # ``ha_retry_timeout``; a standby tries the lease every ``ha_poll`` (and when the
    # holder's grant should end). ``ha_lease_ttl`` bounds how long routing stops when the
    # active node dies; ha_renew + 2 x ha_retry_timeout + 0.5 s must not exceed it.
    ha_renew: float = Field(default=0.5, gt=0.0, le=100.0)
    ha_retry_timeout: float = Field(default=0.5, gt=0.0, le=100.0)
    ha_poll: float = Field(default=0.5, gt=0.0, le=60.0)
    ha_lease_ttl: float = Field(default=2.0, ge=1.0, le=300.0)
    # Record feed webhooks (docs/api.md): targets that get the RCD/TCD records pushed, each
    # signing with a secret read from the environment variable it names (never from a file).
    record_feeds: list[RecordFeedTarget] = Field(default_factory=list)

    @field_validator("record_feeds")
    @classmethod
    def _unique_feeds(cls, value: list[RecordFeedTarget]) -> list[RecordFeedTarget]:
        return check_unique(value)

    @field_validator("http", "sip")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parse_host_port(value)
        return value

    @field_validator("sip_trusted", "sip_targets", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """Checked by the SIP front when it starts (``sip/trust.py``)."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def sip_trusted_list(self) -> list[str]:
        return _listed(self.sip_trusted)

    @property
    def sip_targets_list(self) -> list[str]:
        return _listed(self.sip_targets)

    @field_validator("ha_lease_ttl")
    @classmethod
    def _lease_rule(cls, ttl: float, info: ValidationInfo) -> float:
        fields = ("ha_renew", "ha_retry_timeout", "ha_poll")
        if all(name in info.data for name in fields):  # else their own error is reported
            times = LeaseTimes(
                ttl=ttl,
                renew=info.data["ha_renew"],
                retry_timeout=info.data["ha_retry_timeout"],
                poll=info.data["ha_poll"],
            )
            problems = times.problems()
            if problems:
                raise ValueError("; ".join(problems))
        return ttl

    def lease_times(self) -> LeaseTimes:
        return LeaseTimes(
            ttl=self.ha_lease_ttl,
            renew=self.ha_renew,
            retry_timeout=self.ha_retry_timeout,
            poll=self.ha_poll,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = settings_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def db_url(self) -> str:
        """The database URL; by default a SQLite file in the data directory."""
        if self.db:
            return normalize_db_url(self.db)
        return f"sqlite:///{self.data_dir / 'expertline.db'}"

    @property
    def reporting_db_url(self) -> str:
        return normalize_db_url(self.reporting_db) if self.reporting_db else self.db_url


def _listed(value: list[str] | str) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def normalize_db_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) -> (host, port); ValueError with a clear message."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def load_settings(**flags: Any) -> Settings:
    """Build settings from every layer; ``flags`` are the command-line values actually given."""
    return Settings(**{k: v for k, v in flags.items() if v is not None})
