"""The link state machine, its backoff, and reading presence sources from the configuration."""

from __future__ import annotations

import pytest

from expertline.config.validate import load_yaml
from expertline.errors import InvalidInput
from expertline.presence.link import TRANSITIONS, Backoff, Link, LinkTransitionError
from expertline.presence.service import PresenceConfigError, RuntimeDirectory, xmpp_settings
from expertline.routing.model import ExpertSpec


def test_link_walks_the_drawn_transitions_only() -> None:
    link = Link()
    for event, state in [
        ("start", "connecting"),
        ("failed", "waiting"),
        ("retry", "connecting"),
        ("connected", "online"),
        ("lost", "waiting"),
        ("stop", "stopped"),
    ]:
        assert link.fire(event) == state  # type: ignore[arg-type]
    assert not link.up
    with pytest.raises(LinkTransitionError, match="no transition from stopped on lost"):
        link.fire("lost")
    assert link.state == "stopped"
    assert all(("online", e) not in TRANSITIONS for e in ("start", "retry", "connected"))


def test_backoff_grows_to_the_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(initial=0.5, cap=4.0, jitter=0.5)
    top = [backoff.next_delay(lambda: 0.0) for _ in range(6)]
    assert top == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay(lambda: 1.0) == 0.25  # the most jitter halves it


DOC = """
experts:
  - {id: alice, name: Alice, im: Alice@Example.test, phone: "1001"}
  - {id: bob, name: Bob, im: bob@example.test, phone: "1002", presence_source: other}
  - {id: carol, name: Carol, phone: "1003"}
queues:
  - {id: q, name: Q, select: "true", show: {caller: masked, account: hidden}}
presence:
  - id: corp
    kind: xmpp
    jid: router@example.test
    password_env: EXPERTLINE_TEST_PW
    status_map: {available: [online], away: [away, xa, chat], dnd: [dnd]}
    subscribe_pace: {burst: 9, pause: 2m}
    tls: {mode: required, ca_file: /etc/expertline/corp-ca.pem}
    links:
      - {jid: router@example.test, password_env: EXPERTLINE_TEST_PW2, host: xmpp2.example.test}
  - id: other
    kind: xmpp
    component: {jid: expertline.example.test, secret_env: EXPERTLINE_TEST_SECRET, port: 5348}
messages:
  es: {accepted: "Aceptada #{code} ya"}
"""


class _Port:
    def __init__(self, running: bool = True) -> None:
        self.doc = load_yaml(DOC)
        self.running = running
        self.specs = {  # a runtime that is not running holds no configuration
            e.id: ExpertSpec(e.id, e.name, e.phone, im=e.im, locale=e.locale)
            for e in self.doc.experts
            if running
        }

    @property
    def document(self) -> object:
        return self.doc

    def expert(self, expert_id: str) -> ExpertSpec | None:
        return self.specs.get(expert_id)


def test_settings_from_the_configuration_read_secrets_from_the_environment() -> None:
    doc = load_yaml(DOC)
    corp, other = doc.presence
    account = xmpp_settings(corp, {"EXPERTLINE_TEST_PW": "s3cret"})
    assert (account.mode, account.host, account.port, account.secret) == (
        "account",
        "example.test",
        5222,
        "s3cret",
    )
    assert account.status_map.map("chat") == "away" and account.status_map.map(None) == "available"
    assert (account.subscribe_burst, account.subscribe_pause) == (9, 120.0)
    assert (account.tls_mode, account.ca_file) == ("required", "/etc/expertline/corp-ca.pem")
    second = xmpp_settings(
        corp.links[0], {"EXPERTLINE_TEST_PW2": "two"}, owner=corp, link_id="corp/2"
    )
    assert (second.id, second.host, second.secret, second.subscribe_burst) == (
        "corp/2",
        "xmpp2.example.test",
        "two",
        9,
    )
    assert (second.tls_mode, second.ca_file) == ("opportunistic", None)  # the link's own
    component = xmpp_settings(other, {"EXPERTLINE_TEST_SECRET": "x"})
    assert (component.mode, component.jid, component.port) == (
        "component",
        "expertline.example.test",
        5348,
    )
    with pytest.raises(PresenceConfigError, match=r"EXPERTLINE_TEST_PW .* is not set"):
        xmpp_settings(corp, {})
    plain = load_yaml(DOC.replace("    subscribe_pace: {burst: 9, pause: 2m}\n", "")).presence[0]
    default = xmpp_settings(plain, {"EXPERTLINE_TEST_PW": "x"})
    assert (default.subscribe_burst, default.subscribe_pause) == (4, 65.0)  # under ejabberd's 5/min
    assert (default.tls_mode, default.ca_file) == ("required", "/etc/expertline/corp-ca.pem")


def test_a_subscribe_pace_of_zero_requests_is_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        load_yaml(DOC.replace("burst: 9", "burst: 0"))
    assert "subscribe_pace" in str(refused.value.details)
    with pytest.raises(InvalidInput) as refused:
        load_yaml(DOC.replace(", password_env: EXPERTLINE_TEST_PW2", ""))
    assert "links" in str(refused.value.details)
    with pytest.raises(InvalidInput) as refused:
        load_yaml(DOC.replace("mode: required", "mode: sometimes"))
    assert "tls" in str(refused.value.details)


def test_directory_serves_each_source_its_experts_texts_and_show_rules() -> None:
    directory = RuntimeDirectory(_Port())  # type: ignore[arg-type]
    assert [e.id for e in directory.experts("corp")] == ["alice"]  # the first source by default
    assert [e.id for e in directory.experts("other")] == ["bob"]
    assert directory.messages("es").render("accepted", code="1") == "Aceptada #1 ya"
    assert directory.messages("es").render("declined", code="1").startswith("Rechazada #1")
    assert directory.messages("en").render("notice", code="1", queue="Q", caller="c", waited="1s")
    assert directory.show_rules("q") == {"caller": "masked", "account": "hidden"}
    assert directory.show_rules("nope") == {}


def test_a_standby_directory_serves_the_stored_experts() -> None:
    """An HA standby's runtime is not running: whom to listen to comes from the document."""
    directory = RuntimeDirectory(_Port(running=False))  # type: ignore[arg-type]
    (alice,) = directory.experts("corp")
    assert (alice.id, alice.im) == ("alice", "Alice@Example.test")
    assert [e.id for e in directory.experts("other")] == ["bob"]
