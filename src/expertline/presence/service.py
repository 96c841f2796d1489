"""Wiring: presence sources from the configuration, as services of a runtime node.

``create_presence_sources(ctx, port)`` reads the configured ``presence`` sources when the node
is built (so each source is registered as an expert channel before the runtime starts and can
replay undelivered IM texts), reads their secrets from the environment, and returns one
``XmppSource`` per source. Experts, texts and ``show`` rules are read live from the runtime's
configuration through ``RuntimeDirectory``; each source follows new configuration versions.
Adding, removing or re-pointing a presence source itself takes effect at the next start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from expertline.config.schema import ConfigDocument, XmppLink
from expertline.config.schema import PresenceSource as PresenceSourceConfig
from expertline.config.store import load_document
from expertline.eligibility.build import expert_spec
from expertline.presence.mapping import StatusMap
from expertline.presence.protocol import MessageSet
from expertline.presence.redundant import LinkPort, RedundantSource
from expertline.presence.xmpp import XmppSettings, XmppSource
from expertline.routing.model import ExpertSpec
from expertline.runtime.ports import RoutingPort

log = logging.getLogger("expertline.presence")


class PresenceConfigError(ValueError):
    """A presence source that cannot start as configured (e.g. its secret is not set)."""


class RuntimeDirectory:
    """The configuration in effect, as the runtime holds it (it changes with versions)."""

    def __init__(self, port: RoutingPort, fallback: ConfigDocument | None = None) -> None:
        self._port = port
        self._fallback = fallback
        self._messages: dict[tuple[int, str], MessageSet] = {}

    def document(self) -> ConfigDocument | None:
        doc = self._port.document
        return doc if isinstance(doc, ConfigDocument) else self._fallback

    def version(self) -> int:
        return self._port.config.version

    def experts(self, source_id: str) -> Sequence[ExpertSpec]:
        doc = self.document()
        if doc is None or not doc.presence:
            return []
        first = doc.presence[0].id
        running = self._port.running
        served: list[ExpertSpec] = []
        for expert in doc.experts:
            if not expert.im or (expert.presence_source or first) != source_id:
                continue
            spec = self._port.expert(expert.id)
            if spec is None and not running:
                # A standby: its runtime holds no configuration; the stored one says whom
                # to listen to, so presence is warm when this node takes over.
                spec = expert_spec(expert, [])
            if spec is not None:
                served.append(spec)
        return served

    def messages(self, locale: str) -> MessageSet:
        doc = self.document()
        if doc is None:
            return MessageSet.build(locale)
        key = (id(doc), locale)
        found = self._messages.get(key)
        if found is None:
            if len(self._messages) > 64:
                self._messages.clear()
            found = self._messages[key] = MessageSet.from_document(doc, locale)
        return found

    def show_rules(self, queue_id: str) -> Mapping[str, str]:
        doc = self.document()
        queue = doc.queue_map.get(queue_id) if doc is not None else None
        return dict(queue.show) if queue is not None else {}


def xmpp_settings(
    source: PresenceSourceConfig | XmppLink,
    env: Mapping[str, str] | None = None,
    *,
    owner: PresenceSourceConfig | None = None,
    link_id: str | None = None,
    **tuning: Any,
) -> XmppSettings:
    """Connection settings for a configured source, or for one more link of it (``owner``);
    the secret comes from the environment."""
    env = os.environ if env is None else env
    if isinstance(source, XmppLink):
        assert owner is not None and link_id is not None
        link = source
        source = owner.model_copy(
            update={
                "id": link_id,
                "jid": link.jid,
                "password_env": link.password_env,
                "host": link.host,
                "port": link.port,
                "component": link.component,
                "tls": link.tls,
            }
        )
    status_map = StatusMap.lenient(
        {
            "available": source.status_map.available,
            "away": source.status_map.away,
            "dnd": source.status_map.dnd,
        }
    )
    if source.component is not None:
        comp = source.component
        secret = env.get(comp.secret_env)
        if not secret:
            raise PresenceConfigError(
                f"presence source {source.id}: environment variable {comp.secret_env} "
                "(the component secret) is not set"
            )
        return XmppSettings(
            source.id, "component", comp.jid, secret, comp.host, comp.port, status_map, **tuning
        )
    assert source.jid is not None and source.password_env is not None
    password = env.get(source.password_env)
    if not password:
        raise PresenceConfigError(
            f"presence source {source.id}: environment variable {source.password_env} "
            "(the password) is not set"
        )
    host = source.host or source.jid.split("@", 1)[1].split("/", 1)[0]
    pace = {
        "subscribe_burst": source.subscribe_pace.burst,
        "subscribe_pause": source.subscribe_pace.pause,
        "tls_mode": source.tls.mode,
        "ca_file": source.tls.ca_file,
    }
    return XmppSettings(
        source.id,
        "account",
        source.jid,
        password,
        host,
        source.port,
        status_map,
        **{**pace, **tuning},
    )


def create_presence_sources(
    ctx: Any, port: RoutingPort, document: ConfigDocument | None = None
) -> list[XmppSource | RedundantSource]:
    """One started-later source per configured presence source, registered as a channel.

    ``document`` defaults to the stored configuration."""
    doc = document if document is not None else _stored_document(ctx)
    if doc is None or not doc.presence:
        return []
    health = ctx.services.health
    directory = RuntimeDirectory(port, fallback=doc)
    sources: list[XmppSource | RedundantSource] = []
    for spec in doc.presence:
        try:
            settings = xmpp_settings(spec)
            more = [
                xmpp_settings(link, owner=spec, link_id=f"{spec.id}/{n}")
                for n, link in enumerate(spec.links, start=2)
            ]
        except PresenceConfigError as exc:
            log.error("presence source not started source=%s reason=%s", spec.id, exc)
            if health is not None:
                health.report(f"presence:{spec.id}", False, str(exc))
            continue
        source: XmppSource | RedundantSource
        if more:
            redundant = RedundantSource(spec.id, port, [], health, links_later=True)
            first = replace(settings, id=f"{spec.id}/1")
            redundant.links = [
                XmppSource(s, LinkPort(redundant, n), directory, health, health_required=False)
                for n, s in enumerate([first, *more])
            ]
            redundant.reset_views()
            source = redundant
        else:
            source = XmppSource(settings, port, directory, health)
        port.register_channel(source)
        sources.append(source)
        log.info(
            "presence source configured source=%s mode=%s jid=%s server=%s:%d",
            spec.id,
            settings.mode,
            settings.jid,
            settings.host,
            settings.port,
        )
    return sources


def _stored_document(ctx: Any) -> ConfigDocument | None:
    _, doc = load_document(ctx.engine)
    return doc
