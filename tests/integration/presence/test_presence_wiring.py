"""A node builds its presence sources from the stored configuration (no server needed)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from expertline.config.store import apply_document
from expertline.config.validate import load_yaml
from expertline.health import Health
from expertline.presence.redundant import RedundantSource
from expertline.presence.service import create_presence_sources
from expertline.settings import Settings
from expertline.web.app import AppContext

DOC = """
experts:
  - {id: alice, name: Alice, im: alice@example.test, phone: "1001"}
queues:
  - {id: q, name: Q, select: "true"}
presence:
  - {id: corp, kind: xmpp, jid: router@example.test, password_env: EXPERTLINE_TEST_XMPP_PW}
  - id: side
    kind: xmpp
    component: {jid: expertline.example.test, secret_env: EXPERTLINE_TEST_XMPP_SECRET}
"""


class _Runtime:
    def __init__(self) -> None:
        self.channels: list[object] = []

    def register_channel(self, channel: object) -> None:
        self.channels.append(channel)


def test_sources_come_from_the_stored_configuration(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_document(engine, load_yaml(DOC), actor="test")
    monkeypatch.setenv("EXPERTLINE_TEST_XMPP_PW", "pw")
    monkeypatch.delenv("EXPERTLINE_TEST_XMPP_SECRET", raising=False)
    ctx = AppContext(Settings(node="n"), engine)
    health = ctx.services.health = Health()
    runtime = _Runtime()
    sources = create_presence_sources(ctx, runtime)  # type: ignore[arg-type]
    assert [s.id for s in sources] == ["corp"]
    assert runtime.channels == sources  # registered before the runtime starts
    assert sources[0].settings.host == "example.test"
    (side,) = [c for c in health.components() if c.name == "presence:side"]
    assert not side.up and "EXPERTLINE_TEST_XMPP_SECRET" in side.detail


def test_no_presence_sources_configured(engine: Engine) -> None:
    ctx = AppContext(Settings(node="n"), engine)
    assert create_presence_sources(ctx, _Runtime()) == []  # type: ignore[arg-type]


def test_a_source_with_links_is_one_redundant_source(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = DOC.replace(
        "password_env: EXPERTLINE_TEST_XMPP_PW}",
        "password_env: EXPERTLINE_TEST_XMPP_PW,\n"
        "     links: [{component: {jid: expertline.example.test,"
        " secret_env: EXPERTLINE_TEST_XMPP_SECRET2}}]}",
    )
    apply_document(engine, load_yaml(doc), actor="test")
    monkeypatch.setenv("EXPERTLINE_TEST_XMPP_PW", "pw")
    monkeypatch.setenv("EXPERTLINE_TEST_XMPP_SECRET2", "s2")
    ctx = AppContext(Settings(node="n"), engine)
    ctx.services.health = Health()
    runtime = _Runtime()
    (corp,) = create_presence_sources(ctx, runtime)  # type: ignore[arg-type]
    assert isinstance(corp, RedundantSource) and runtime.channels == [corp]
    assert [(link.id, link.settings.mode) for link in corp.links] == [
        ("corp/1", "account"),
        ("corp/2", "component"),
    ]
