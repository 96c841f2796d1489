"""Database URLs: libpq's multi-host form for a PostgreSQL primary and its replicas, and the
connection bounds every PostgreSQL engine gets."""

from __future__ import annotations

import pytest

from expertline.db.engine import (
    PG_CONNECT_DEFAULTS,
    DatabaseError,
    connect_params,
    is_sqlite,
    make_engine,
    parse_url,
)
from expertline.settings import normalize_db_url


def params(url: str) -> dict[str, object]:
    engine = make_engine(url)
    try:
        return connect_params(engine)
    finally:
        engine.dispose()


def test_a_multi_host_url_reaches_libpq_as_host_and_port_lists_to_the_primary() -> None:
    url = normalize_db_url("postgresql://ex:p%40ss@db1:5432,db2:5433/expertline")
    got = params(url)
    assert (got["host"], got["port"]) == ("db1,db2", "5432,5433")
    assert got["target_session_attrs"] == "read-write"  # several hosts: only the primary
    assert (got["user"], got["password"], got["dbname"]) == ("ex", "p@ss", "expertline")
    assert not is_sqlite(url)


def test_a_multi_host_url_keeps_its_own_parameters_and_takes_ipv6_and_default_ports() -> None:
    got = params(
        "postgresql+psycopg://ex@[::1]:6432,db2/expertline?target_session_attrs=any"
        "&sslmode=require&connect_timeout=7"
    )
    assert (got["host"], got["port"]) == ("::1,db2", "6432,")
    assert (got["target_session_attrs"], got["sslmode"]) == ("any", "require")
    assert got["connect_timeout"] == "7"  # the URL's own bound wins


def test_a_single_host_url_is_unchanged_and_gets_the_connection_bounds() -> None:
    url = "postgresql+psycopg://ex@db1:5432/expertline"
    assert parse_url(url).render_as_string() == url
    got = params(url)
    assert (got["host"], got["port"]) == ("db1", 5432)
    assert "target_session_attrs" not in got
    assert {k: got[k] for k in PG_CONNECT_DEFAULTS} == PG_CONNECT_DEFAULTS


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+psycopg://ex@db1:x,db2/e", "bad host 'db1:x' in the database URL"),
        ("postgresql+psycopg://ex@db1,/e", "bad host '' in the database URL"),
        ("postgresql+psycopg://ex@db1,db2/e?host=db3", "either before the path"),
        ("postgresql+psycopg://ex:secret@db1:70000x/e", "bad database URL 'postgresql+psycopg://ex:***@"),
    ],
)  # fmt: skip
def test_bad_urls_are_one_clear_error_without_the_password(url: str, message: str) -> None:
    with pytest.raises(DatabaseError) as caught:
        make_engine(url)
    assert message in str(caught.value)
    assert "secret" not in str(caught.value)


def test_sqlite_urls_are_left_alone(tmp_path: object) -> None:
    assert is_sqlite("sqlite:///x.db")
    assert parse_url("sqlite:///x,y.db").database == "x,y.db"
