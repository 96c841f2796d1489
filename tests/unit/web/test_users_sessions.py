"""The password store, browser sessions and CSRF tokens of the web pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from expertline.config.store import apply_document
from expertline.config.validate import load_yaml
from expertline.db.tables import web_sessions, web_users
from expertline.errors import Conflict, InvalidInput
from expertline.security.tokens import create_token, revoke_token
from expertline.web import users
from expertline.web.sessions import Principal, SessionStore, check_csrf, key_hash
from expertline.web.signin import Throttle

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_password_is_kept_only_as_an_argon2id_hash(sqlite_engine) -> None:
    users.create_user(sqlite_engine, "ann", "admin", PASSWORD)
    with sqlite_engine.connect() as conn:
        stored = conn.execute(select(web_users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    user = users.authenticate(sqlite_engine, "ann", PASSWORD)
    assert user is not None and user.role == "admin"
    assert users.authenticate(sqlite_engine, "ann", PASSWORD + "!") is None
    assert users.authenticate(sqlite_engine, "nobody", PASSWORD) is None


def test_bad_users_are_refused_with_every_problem_and_nothing_is_stored(sqlite_engine) -> None:
    with pytest.raises(InvalidInput) as caught:
        users.create_user(sqlite_engine, "-bad name", "root", "short")
    assert {p.path for p in caught.value.details} == {"username", "role", "password"}
    with pytest.raises(InvalidInput) as caught:
        users.create_user(sqlite_engine, "eve", "expert", PASSWORD)  # bound to nobody
    assert [p.path for p in caught.value.details] == ["expert"]
    with pytest.raises(InvalidInput) as caught:
        users.create_user(sqlite_engine, "eve", "expert", PASSWORD, expert_id="ghost")
    assert "no expert 'ghost'" in caught.value.details[0].message
    with pytest.raises(InvalidInput):
        users.create_user(sqlite_engine, "eve", "admin", PASSWORD, expert_id="alice")
    assert users.list_users(sqlite_engine) == []
    users.create_user(sqlite_engine, "ann", "admin", PASSWORD)
    with pytest.raises(Conflict):
        users.create_user(sqlite_engine, "ann", "supervisor", PASSWORD)


def test_an_expert_user_is_bound_to_a_configured_expert(sqlite_engine) -> None:
    doc = load_yaml("experts:\n  - {id: alice, name: Alice, phone: 'sip:1@x'}\n")
    apply_document(sqlite_engine, doc, "test")
    user = users.create_user(sqlite_engine, "alice", "expert", PASSWORD, expert_id="alice")
    assert user.expert_id == "alice"


def test_sessions_end_at_sign_out_idle_time_and_lifetime(sqlite_engine) -> None:
    clock = Clock()
    sessions = SessionStore(
        sqlite_engine, lifetime=timedelta(hours=8), idle=timedelta(minutes=30), clock=clock
    )
    user = users.create_user(sqlite_engine, "ann", "admin", PASSWORD)
    principal = Principal("user", user.id, "ann", "admin")
    key, session = sessions.create(principal)
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(web_sessions.c.key_hash)).scalar_one() == key_hash(key)
    assert sessions.load(key) == session
    assert sessions.load(key + "x") is None

    clock.now += timedelta(minutes=20)
    assert sessions.load(key) is not None  # used within the idle time: kept, seen again
    clock.now += timedelta(minutes=29)
    assert sessions.load(key) is not None
    clock.now += timedelta(minutes=31)
    assert sessions.load(key) is None  # idle too long
    key, _ = sessions.create(principal)
    for _ in range(19):  # active all day long (7 h 55), still ends at its lifetime (8 h)
        clock.now += timedelta(minutes=25)
        assert sessions.load(key) is not None
    clock.now += timedelta(minutes=25)
    assert sessions.load(key) is None

    key, _ = sessions.create(principal)
    sessions.end(key)
    assert sessions.load(key) is None


def test_a_session_ends_with_its_user_or_token(sqlite_engine) -> None:
    sessions = SessionStore(sqlite_engine)
    user = users.create_user(sqlite_engine, "ann", "admin", PASSWORD)
    key, _ = sessions.create(Principal("user", user.id, "ann", "admin"))
    users.disable_user(sqlite_engine, "ann")
    assert sessions.load(key) is None
    assert users.authenticate(sqlite_engine, "ann", PASSWORD) is None

    users.enable_user(sqlite_engine, "ann")
    key, _ = sessions.create(Principal("user", user.id, "ann", "admin"))
    users.set_password(sqlite_engine, "ann", PASSWORD + " two")
    assert sessions.load(key) is None
    assert users.authenticate(sqlite_engine, "ann", PASSWORD + " two") is not None

    create_token(sqlite_engine, "ops", "admin")
    token_id = 1
    key, session = sessions.create(Principal("token", token_id, "ops", "admin"))
    assert sessions.still_live(session)
    revoke_token(sqlite_engine, "ops")
    assert not sessions.still_live(session)
    assert sessions.load(key) is None


def test_csrf_tokens_belong_to_their_session(sqlite_engine) -> None:
    sessions = SessionStore(sqlite_engine)
    user = users.create_user(sqlite_engine, "ann", "admin", PASSWORD)
    _, one = sessions.create(Principal("user", user.id, "ann", "admin"))
    _, two = sessions.create(Principal("user", user.id, "ann", "admin"))
    assert check_csrf(one, one.csrf)
    assert not check_csrf(one, two.csrf)
    assert not check_csrf(one, None) and not check_csrf(one, "")


def test_repeated_failures_slow_a_name_down_until_a_success() -> None:
    now = [0.0]
    throttle = Throttle(allowed=3, pause=10, longest=60, clock=lambda: now[0])
    for _ in range(2):
        throttle.failed("user:ann")
    assert throttle.wait("user:ann") <= 0
    throttle.failed("user:ann")
    assert throttle.wait("user:ann") == 10
    throttle.failed("user:ann")
    assert throttle.wait("user:ann") == 20  # doubling
    for _ in range(5):
        throttle.failed("user:ann")
    assert throttle.wait("user:ann") == 60  # capped
    assert throttle.wait("user:bob") <= 0
    now[0] = 100
    throttle.succeeded("user:ann")
    assert throttle.wait("user:ann") <= 0
