from __future__ import annotations

import pytest
from typer.testing import CliRunner

from expertline.cli import app
from expertline.config.schema import ConfigDocument
from expertline.config.store import apply_document
from expertline.db import migrate
from expertline.db.engine import make_engine
from expertline.errors import InvalidInput, NotFound
from expertline.security.tokens import (
    create_token,
    hash_token,
    list_tokens,
    revoke_token,
    verify_token,
)


def test_token_is_stored_only_as_hash(engine):
    token = create_token(engine, "cc", "routing-client")
    with engine.connect() as conn:
        stored = [
            row.token_hash for row in conn.exec_driver_sql("select token_hash from api_tokens")
        ]
    assert stored == [hash_token(token)]
    assert token not in stored
    info = verify_token(engine, token)
    assert info is not None and info.role == "routing-client" and info.name == "cc"


def test_revoked_token_no_longer_verifies(engine):
    token = create_token(engine, "cc", "admin")
    assert revoke_token(engine, "cc") == 1
    assert verify_token(engine, token) is None
    assert list_tokens(engine)[0].revoked_at is not None
    with pytest.raises(NotFound):
        revoke_token(engine, "cc")


def test_bad_role_and_name_are_both_reported(engine):
    with pytest.raises(InvalidInput) as caught:
        create_token(engine, " ", "root")
    assert {p.path for p in caught.value.details} == {"role", "name"}
    assert list_tokens(engine) == []


def _configure(engine, *experts):
    doc = ConfigDocument.model_validate(
        {"experts": [{"id": e, "name": e, "phone": f"sip:{e}@pbx.example.test"} for e in experts]}
    )
    apply_document(engine, doc, actor="test")


def test_an_expert_token_is_bound_to_one_configured_expert(engine):
    _configure(engine, "alice")
    token = create_token(engine, "alice-console", "expert", "alice")
    info = verify_token(engine, token)
    assert info is not None and (info.role, info.expert_id) == ("expert", "alice")
    assert [t.expert_id for t in list_tokens(engine)] == ["alice"]
    admin = verify_token(engine, create_token(engine, "ops", "admin"))
    assert admin is not None and admin.expert_id is None


@pytest.mark.parametrize(
    ("role", "expert", "words"),
    [
        ("expert", None, "give --expert EXPERT_ID"),
        ("expert", "zoe", "no expert 'zoe' in the configuration"),
        ("expert", "a\x00b", "control character"),
        ("expert", "x" * 300, "at most 255"),
        ("admin", "alice", "only expert tokens are bound to an expert, not admin"),
        ("routing-client", "alice", "only expert tokens"),
    ],
)
def test_a_bad_binding_is_refused_and_creates_nothing(engine, role, expert, words):
    _configure(engine, "alice")
    with pytest.raises(InvalidInput) as caught:
        create_token(engine, "t", role, expert)
    assert [p.path for p in caught.value.details] == ["expert"]
    assert words in caught.value.details[0].message
    assert list_tokens(engine) == []


def test_supervisor_is_a_role(engine):
    info = verify_token(engine, create_token(engine, "floor", "supervisor"))
    assert info is not None and info.role == "supervisor"


def test_the_cli_binds_an_expert_token_and_says_so(engine, db_url):
    _configure(engine, "alice")
    runner = CliRunner()
    made = runner.invoke(
        app, ["--db", db_url, "tokens", "create", "a", "--role", "expert", "--expert", "alice"]
    )
    assert made.exit_code == 0, made.output
    assert "for expert 'alice'" in made.stdout
    info = verify_token(engine, made.stdout.strip().splitlines()[-1])
    assert info is not None and info.expert_id == "alice"
    listed = runner.invoke(app, ["--db", db_url, "tokens", "list"])
    assert "alice" in listed.stdout
    unbound = runner.invoke(app, ["--db", db_url, "tokens", "create", "b", "--role", "expert"])
    assert unbound.exit_code != 0


def test_tokens_of_an_earlier_revision_survive_the_upgrade_unbound(tmp_path):
    """Revision 0005 adds the binding; an expert token made before has none."""
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        migrate.upgrade(engine, "0004")
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO api_tokens (name, role, token_hash, created_at) "
                f"VALUES ('console', 'expert', '{hash_token('elt_old')}', "
                "'2026-11-25 10:00:00.000000')"
            )
        migrate.upgrade(engine)
        info = verify_token(engine, "elt_old")
        assert info is not None and (info.role, info.expert_id) == ("expert", None)
    finally:
        engine.dispose()


def test_a_token_check_without_the_database_is_a_prompt_503_never_a_500(tmp_path):
    """Issue 17: while the database could not be read, the bearer-token check raised the
    driver's error (a 500). Now: a token verified before stays valid (revoking one needs the
    database too); an unknown one gets Unavailable (503, with a retry hint)."""
    from expertline.errors import Unavailable
    from expertline.web.auth import TokenVerifier

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate.upgrade(engine)
    known = create_token(engine, "cc", "routing-client")
    verify = TokenVerifier(engine, ttl=0.0)  # every call asks the database
    assert verify(known) is not None
    with engine.begin() as conn:  # the database cannot answer the question any more
        conn.exec_driver_sql("alter table api_tokens rename to api_tokens_away")
    info = verify(known)
    assert info is not None and info.name == "cc"
    with pytest.raises(Unavailable) as refused:
        verify("never-seen")
    assert refused.value.http_status == 503 and refused.value.retry_after
    engine.dispose()
