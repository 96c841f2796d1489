"""The ``presence`` section: the IM/presence systems experts' statuses are read from and offers
are sent through, each with one or more XMPP links."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from expertline.config.durations import Duration
from expertline.config.schema.fields import EnvName, ObjectId, StrictModel
from expertline.errors import clip
from expertline.routing.model import Presence


class StatusMap(StrictModel):
    """Which IM presence values (XMPP ``<show/>``; ``online`` = no show) mean what.

    Anything unlisted counts as *away*; an unavailable or unknown contact is *offline*.
    """

    available: list[str] = Field(
        default_factory=lambda: ["chat", "online"], description="Values meaning available."
    )
    away: list[str] = Field(
        default_factory=lambda: ["away", "xa"], description="Values meaning away."
    )
    dnd: list[str] = Field(
        default_factory=lambda: ["dnd"], description="Values meaning do not disturb."
    )

    @model_validator(mode="after")
    def _disjoint(self) -> StatusMap:
        seen: dict[str, str] = {}
        for status in (Presence.AVAILABLE, Presence.AWAY, Presence.DND):
            for show in getattr(self, status):
                if show in seen:
                    raise ValueError(f"{clip(show)} is mapped to both {seen[show]} and {status}")
                seen[show] = status
        return self

    def status_of(self, show: str) -> Presence:
        if show in self.available:
            return Presence.AVAILABLE
        if show in self.dnd:
            return Presence.DND
        return Presence.AWAY


class SubscribePace(StrictModel):
    """How unanswered presence subscription requests are re-sent (under a server's flood
    limit, such as ejabberd's mod_pres_counter: 5 a minute by default)."""

    burst: int = Field(
        default=4, ge=1, le=10000, strict=True, description="Requests sent together."
    )
    pause: Duration = Field(
        default=65.0, ge=0, description="Silence between bursts (longer than the server's window)."
    )


class XmppTls(StrictModel):
    """TLS for an account-mode link (STARTTLS on the client port)."""

    mode: Literal["required", "opportunistic", "off"] = Field(
        default="opportunistic",
        description="required: no login without TLS; opportunistic: STARTTLS when the server "
        "offers it; off: never (loopback or a trusted network only).",
    )
    ca_file: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="PEM file of the certificate authorities to trust (default: the system's).",
    )


class XmppComponent(StrictModel):
    """XEP-0114 component connection (the server must allow it)."""

    jid: str = Field(min_length=1, max_length=255, description="Component domain.")
    secret_env: EnvName = Field(description="Environment variable holding the shared secret.")
    host: str = Field(default="127.0.0.1", description="Server host.")
    port: int = Field(
        default=5347, ge=1, le=65535, strict=True, description="Server component port."
    )


# The login of a link, declared once for a source's own link and for each of its extra links.
# Field types rather than a shared base class: a base class's fields would come first, and the
# field order is the order of the export, the schema and the reference page.
AccountJid = Annotated[
    str | None,
    Field(pattern=r"^[^@/\s]+@[^@/\s]+(/\S+)?$", description="Account mode: the JID to log in as."),
]
AccountPasswordEnv = Annotated[
    EnvName | None,
    Field(description="Account mode: environment variable holding the password."),
]
AccountHost = Annotated[
    str | None, Field(description="Account mode: server host (default: the JID's domain).")
]
AccountPort = Annotated[
    int, Field(ge=1, le=65535, strict=True, description="Account mode: server port.")
]
AccountTls = Annotated[XmppTls, Field(description="Account mode: TLS settings.")]
ComponentMode = Annotated[
    XmppComponent | None, Field(description="Component mode instead of account mode.")
]


def _check_login_mode(link: XmppLink | PresenceSource) -> None:
    """A link logs in one way: as an account (jid and password_env) or as a component."""
    account = link.jid is not None or link.password_env is not None or link.host is not None
    if link.component is not None and account:
        raise ValueError("give either jid/password_env/host (account mode) or component")
    if link.component is None:
        missing = [k for k in ("jid", "password_env") if getattr(link, k) is None]
        if missing:
            raise ValueError(f"account mode needs {' and '.join(missing)} (or use component mode)")


class XmppLink(StrictModel):
    """One more link of a presence source: another server or account, kept connected too."""

    jid: AccountJid = None
    password_env: AccountPasswordEnv = None
    host: AccountHost = None
    port: AccountPort = 5222
    component: ComponentMode = None
    tls: AccountTls = Field(default_factory=XmppTls)

    @model_validator(mode="after")
    def _one_mode(self) -> XmppLink:
        _check_login_mode(self)
        return self


class PresenceSource(StrictModel):
    """A connection to an IM/presence system: XMPP account mode or component mode."""

    id: ObjectId = Field(description="Stable identifier.")
    kind: Literal["xmpp"] = Field(description="xmpp (the only kind so far).")
    jid: AccountJid = None
    password_env: AccountPasswordEnv = None
    host: AccountHost = None
    port: AccountPort = 5222
    component: ComponentMode = None
    status_map: StatusMap = Field(
        default_factory=StatusMap, description="Presence values -> available/away/dnd."
    )
    tls: AccountTls = Field(default_factory=XmppTls)
    links: list[XmppLink] = Field(
        default_factory=list,
        max_length=8,
        description="Redundant links: more servers or accounts, all connected at once; an "
        "expert is available when any live link says so and none said otherwise since.",
    )
    subscribe_pace: SubscribePace = Field(
        default_factory=SubscribePace,
        description="Account mode: pacing of re-sent subscription requests.",
    )

    @model_validator(mode="after")
    def _one_mode(self) -> PresenceSource:
        _check_login_mode(self)
        return self
