"""Settings layers: defaults < settings file < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from expertline.settings import Settings, load_settings, normalize_db_url, parse_host_port


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in (
        "EXPERTLINE_SETTINGS",
        "EXPERTLINE_DB",
        "EXPERTLINE_HTTP",
        "EXPERTLINE_NODE",
        "EXPERTLINE_DATA_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_each_layer_overrides_the_one_below(clean_env, tmp_path):
    assert load_settings().http == "127.0.0.1:8080"
    (tmp_path / "expertline.toml").write_text('http = "127.0.0.1:9001"\nnode = "from-file"\n')
    assert load_settings().http == "127.0.0.1:9001"
    clean_env.setenv("EXPERTLINE_HTTP", "127.0.0.1:9002")
    s = load_settings()
    assert (s.http, s.node) == ("127.0.0.1:9002", "from-file")
    assert load_settings(http="127.0.0.1:9003").http == "127.0.0.1:9003"
    # A flag that was not given (None) does not mask the lower layers.
    assert load_settings(http=None).http == "127.0.0.1:9002"


def test_explicit_settings_file_and_default_database(clean_env, tmp_path):
    path = tmp_path / "elsewhere.toml"
    path.write_text(f'data_dir = "{tmp_path / "d"}"\n')
    clean_env.setenv("EXPERTLINE_SETTINGS", str(path))
    s = load_settings()
    assert s.db_url == f"sqlite:///{tmp_path / 'd' / 'expertline.db'}"
    assert Path(s.data_dir) == tmp_path / "d"


def test_unknown_keys_and_bad_addresses_are_rejected(clean_env, tmp_path):
    (tmp_path / "expertline.toml").write_text('htp = "x"\n')
    with pytest.raises(ValidationError, match="htp"):
        Settings()
    (tmp_path / "expertline.toml").unlink()
    with pytest.raises(ValidationError, match="HOST:PORT"):
        load_settings(sip="5060")


def test_helpers():
    assert normalize_db_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_db_url("sqlite:///x.db") == "sqlite:///x.db"
    assert parse_host_port("[::1]:5060") == ("::1", 5060)
    with pytest.raises(ValueError):
        parse_host_port("host:99999")


def test_sip_trust_lists_from_every_layer(clean_env, tmp_path):
    for name in ("EXPERTLINE_SIP_TRUSTED", "EXPERTLINE_SIP_TARGETS"):
        clean_env.delenv(name, raising=False)
    assert load_settings().sip_trusted_list == [] and load_settings().sip_attach_key_env is None
    (tmp_path / "expertline.toml").write_text('sip_targets = ["gw.test", "*.phones.test"]\n')
    assert load_settings().sip_targets_list == ["gw.test", "*.phones.test"]
    clean_env.setenv("EXPERTLINE_SIP_TRUSTED", "10.0.0.0/8, 127.0.0.1")
    assert load_settings().sip_trusted_list == ["10.0.0.0/8", "127.0.0.1"]
    assert load_settings(sip_trusted="192.0.2.1").sip_trusted_list == ["192.0.2.1"]


def test_sip_refresh_is_bounded() -> None:
    assert Settings(node="n").sip_refresh == 60.0
    assert Settings(node="n", sip_refresh="30").sip_refresh == 30.0
    for bad in (0, 0.5, 3601, "soon"):
        with pytest.raises(ValidationError, match="sip_refresh"):
            Settings(node="n", sip_refresh=bad)


def test_sip_upstream_lifetime_defaults_to_kamailios_and_is_bounded(clean_env):
    assert Settings(node="n").sip_upstream_lifetime == 180.0
    assert Settings(node="n", sip_upstream_lifetime="0").sip_upstream_lifetime == 0.0
    clean_env.setenv("EXPERTLINE_SIP_UPSTREAM_LIFETIME", "900")
    assert load_settings().sip_upstream_lifetime == 900.0
    for bad in (-1, 86401, "soon"):
        with pytest.raises(ValidationError, match="sip_upstream_lifetime"):
            Settings(node="n", sip_upstream_lifetime=bad)
