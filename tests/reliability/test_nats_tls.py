"""NATS over TLS: a real `nats-server` with a certificate signed by a CA made at test time,
that also verifies client certificates and wants a token. The `MSC_NATS_TLS_*` settings
(CA, client certificate and key, expected server name) and `MSC_NATS_TOKEN` must all reach
the client for the flow to run; a server the client cannot verify leaves both services up
but not ready, saying why in their logs."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.processes import wait_for
from support.reliability import running_system

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

SERVER_NAME = "nats.msc.test"  # the only name in the server certificate: not 127.0.0.1
TOKEN = "tls-t0ken-never-logged"


@dataclass(frozen=True)
class Certificates:
    """PEM files: a CA, a server certificate it signed for `SERVER_NAME`, a client one."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _signed(folder: Path, name: str, ca: Path, ca_key: Path, extensions: str) -> Path:
    key, request, cert = (folder / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", *curve, "-keyout", str(key), "-out", str(request), "-subj", f"/CN={name}")
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "1", "-out", str(cert), "-extfile", str(folder / f"{name}.ext"),
    )  # fmt: skip
    return cert


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A fresh CA, and server and client certificates it signed."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificates")
    folder = tmp_path_factory.mktemp("tls")
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(ca_key), "-out", str(ca), "-days", "1", "-subj", "/CN=msc test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    server = _signed(
        folder,
        "server",
        ca,
        ca_key,
        f"subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage=serverAuth\n",
    )
    client = _signed(folder, "client", ca, ca_key, "extendedKeyUsage=clientAuth\n")
    return Certificates(ca, server, folder / "server.key", client, folder / "client.key")


def _server_args(certs: Certificates) -> tuple[str, ...]:
    return (
        "--tls", "--tlscert", str(certs.server_cert), "--tlskey", str(certs.server_key),
        "--tlsverify", "--tlscacert", str(certs.ca), "--auth", TOKEN,
    )  # fmt: skip


@pytest.mark.reliability_smoke
def test_the_flow_runs_over_tls_with_a_client_certificate_and_a_token(
    tmp_path: Path, certificates: Certificates
) -> None:
    env = {
        "MSC_NATS_TLS_CA": str(certificates.ca),
        "MSC_NATS_TLS_CERT": str(certificates.client_cert),
        "MSC_NATS_TLS_KEY": str(certificates.client_key),
        "MSC_NATS_TLS_HOSTNAME": SERVER_NAME,
        "MSC_NATS_TOKEN": TOKEN,
    }
    with running_system(tmp_path, nats_args=_server_args(certificates), env=env) as system:
        added = system.http.post(
            f"{system.cart.url}/carts/tls-1/items", json={"item_id": "item-001", "quantity": 2}
        )
        assert added.status_code == 200, added.text
        system.wait_until_billed({"tls-1": 1}, timeout=60)
        for service in (system.cart, system.billing):
            assert system.http.get(f"{service.url}/readyz").status_code == 200
    for log in tmp_path.glob("*.log"):
        assert TOKEN not in log.read_text(errors="replace")


@pytest.mark.parametrize(
    ("missing", "reason"),
    [
        pytest.param(
            "MSC_NATS_TLS_CA",
            "unable to get local issuer certificate",
            marks=pytest.mark.reliability_smoke,
        ),
        pytest.param(
            "MSC_NATS_TLS_HOSTNAME",
            "certificate is not valid for '127.0.0.1'",
            marks=pytest.mark.reliability,
        ),
    ],
    ids=["untrusted-ca", "wrong-server-name"],
)
def test_a_tls_handshake_that_fails_leaves_the_services_unready(
    tmp_path: Path, certificates: Certificates, missing: str, reason: str
) -> None:
    env = {
        "MSC_NATS_TLS": "true",
        "MSC_NATS_TLS_CA": str(certificates.ca),
        "MSC_NATS_TLS_CERT": str(certificates.client_cert),
        "MSC_NATS_TLS_KEY": str(certificates.client_key),
        "MSC_NATS_TLS_HOSTNAME": SERVER_NAME,
        "MSC_NATS_TOKEN": TOKEN,
    }
    del env[missing]
    with running_system(tmp_path, nats_args=_server_args(certificates), env=env) as system:
        added = system.http.post(
            f"{system.cart.url}/carts/tls-2/items", json={"item_id": "item-001", "quantity": 1}
        )
        assert added.status_code == 200  # commands still land in the outbox
        cart_log = tmp_path / "cart.log"
        wait_for(lambda: reason in cart_log.read_text(), 30, "the cart service's complaint")
        for service in (system.cart, system.billing):
            assert system.http.get(f"{service.url}/readyz").status_code == 503
        assert system.pending_outbox() == 1
