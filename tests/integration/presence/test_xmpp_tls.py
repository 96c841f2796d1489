"""TLS settings of an account-mode link, against ejabberd with a certificate from a private
certificate authority made here (openssl)."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from expertline.presence.xmpp import _encrypted
from support.ejabberd import EjabberdServer, ejabberd_with_router
from support.wait import async_eventually
from support.xmpp_clients import Lab, lab_on

pytestmark = pytest.mark.ejabberd


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_private_ca(directory: Path, host: str) -> tuple[Path, Path]:
    """A certificate authority and a server certificate for ``host`` signed by it: returns
    (the authority's PEM, the server's certificate and key in one PEM)."""
    directory.mkdir(parents=True, exist_ok=True)
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=expertline test authority",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", *curve, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={host}",
        cwd=directory,
    )  # fmt: skip
    (directory / "ext.cnf").write_text(f"subjectAltName=DNS:{host}\nbasicConstraints=CA:FALSE\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf",
        cwd=directory,
    )  # fmt: skip
    pem = directory / "server.pem"
    pem.write_text((directory / "server.crt").read_text() + (directory / "server.key").read_text())
    return directory / "ca.pem", pem


@pytest.fixture
def ca(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return make_private_ca(tmp_path / "pki", "example.test")


@pytest.fixture
def tls_server(tmp_path: Path, ca: tuple[Path, Path]) -> Iterator[EjabberdServer]:
    yield from ejabberd_with_router(
        tmp_path / "ejabberd",
        overrides={"certfiles": [str(ca[1])]},
        c2s_options={"starttls": True},
    )


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[EjabberdServer]:
    yield from ejabberd_with_router(tmp_path / "ejabberd")


@pytest.fixture
async def tls_lab(tls_server: EjabberdServer) -> AsyncIterator[Lab]:
    async with lab_on(tls_server) as lab:
        yield lab


@pytest.fixture
async def plain_lab(plain_server: EjabberdServer) -> AsyncIterator[Lab]:
    async with lab_on(plain_server) as lab:
        yield lab


async def test_a_private_ca_file_is_trusted_and_the_link_is_encrypted(
    tls_lab: Lab, ca: tuple[Path, Path]
) -> None:
    source = await tls_lab.source(tls_mode="required", ca_file=str(ca[0]))
    await async_eventually(lambda: source.up, timeout=10)
    assert source._client is not None and _encrypted(source._client)


async def test_an_untrusted_certificate_is_one_clear_error_not_endless_warnings(
    tls_lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    source = await tls_lab.source(tls_mode="required")  # the system's authorities only
    await async_eventually(lambda: source.failed_attempts >= 4, timeout=20)
    assert not source.up
    detail = source.health.components()[0].detail  # type: ignore[attr-defined]
    assert detail.startswith("tls_failed: certificate of 127.0.0.1:")
    assert "not trusted" in detail and "the system's authorities" in detail
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    assert "kind=tls_failed" in loud[0].getMessage() and loud[0].levelno == logging.ERROR


async def test_required_tls_never_logs_in_on_a_server_without_starttls(
    plain_lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    source = await plain_lab.source(tls_mode="required")
    await async_eventually(lambda: source.failed_attempts >= 2, timeout=20)
    detail = source.health.components()[0].detail  # type: ignore[attr-defined]
    assert detail == "tls_failed: the server offered no STARTTLS and tls.mode is required"
    assert "authentication for router" not in plain_lab.server.tail(400)


async def test_opportunistic_uses_starttls_when_offered_and_off_does_not(
    tls_lab: Lab, ca: tuple[Path, Path]
) -> None:
    encrypted = await tls_lab.source(ca_file=str(ca[0]))
    await async_eventually(lambda: encrypted.up, timeout=10)
    assert encrypted._client is not None and _encrypted(encrypted._client)
    plain = await tls_lab.source(tls_mode="off", id="plain")
    await async_eventually(lambda: plain.up, timeout=10)
    assert plain._client is not None and not _encrypted(plain._client)
