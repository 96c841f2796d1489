from __future__ import annotations

import pytest

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
