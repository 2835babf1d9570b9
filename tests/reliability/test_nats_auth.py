"""NATS that requires authentication: user/password and token reach the client from the
settings, the whole flow works through them, and no secret shows in logs, `/readyz` or
`/metrics`; wrong credentials leave the services up, not ready, and still quiet about them."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from microservice_connector.runtime.nats_options import nats_connect_options, redact
from microservice_connector.settings import Settings
from support.processes import wait_for
from support.reliability import running_system

pytestmark = [pytest.mark.reliability_smoke]

SECRET = "s3cret-Pa55-never-logged"


def _secret_free(system_dir: Path, *texts: str) -> None:
    logs = [path.read_text(errors="replace") for path in system_dir.glob("*.log")]
    for text in [*logs, *texts]:
        assert SECRET not in text


@pytest.mark.e2e
@pytest.mark.nats
@pytest.mark.parametrize(
    ("server_args", "env"),
    [
        (
            ("--user", "msc", "--pass", SECRET),
            {"MSC_NATS_USER": "msc", "MSC_NATS_PASSWORD": SECRET},
        ),
        (("--auth", SECRET), {"MSC_NATS_TOKEN": SECRET}),
    ],
    ids=["user-password", "token"],
)
def test_the_flow_runs_against_a_nats_that_requires_authentication(
    tmp_path: Path, server_args: tuple[str, ...], env: dict[str, str]
) -> None:
    with running_system(tmp_path, nats_args=server_args, env=env) as system:
        added = system.http.post(
            f"{system.cart.url}/carts/auth-1/items", json={"item_id": "item-001", "quantity": 2}
        )
        assert added.status_code == 200, added.text
        system.wait_until_billed({"auth-1": 1}, timeout=60)
        for service in (system.cart, system.billing):
            assert system.http.get(f"{service.url}/readyz").status_code == 200
        texts = [system.http.get(f"{s.url}/metrics").text for s in (system.cart, system.billing)]
        _secret_free(tmp_path, *texts)


@pytest.mark.e2e
@pytest.mark.nats
def test_refused_credentials_leave_the_services_unready_and_the_secret_unlogged(
    tmp_path: Path,
) -> None:
    env = {"MSC_NATS_USER": "msc", "MSC_NATS_PASSWORD": SECRET}
    with running_system(
        tmp_path, nats_args=("--user", "msc", "--pass", "other"), env=env
    ) as system:
        added = system.http.post(
            f"{system.cart.url}/carts/auth-2/items", json={"item_id": "item-001", "quantity": 1}
        )
        assert added.status_code == 200  # commands still land in the outbox
        ready = system.http.get(f"{system.cart.url}/readyz")
        assert ready.status_code == 503
        wait_for(lambda: "not ready" in (tmp_path / "cart.log").read_text(), 30, "a refusal log")
        _secret_free(tmp_path, ready.text, system.http.get(f"{system.cart.url}/metrics").text)


def test_settings_become_client_options_and_urls_are_redacted(tmp_path: Path) -> None:
    creds = tmp_path / "msc.creds"
    creds.write_text("")  # the client reads it only when it connects; it must be there
    options = nats_connect_options(
        Settings(
            nats_user="u",
            nats_password=SECRET,  # type: ignore[arg-type]
            nats_token="t",  # type: ignore[arg-type]
            nats_credentials=creds,
            nats_tls=True,
            nats_tls_hostname="nats.internal",
        )
    )
    assert options["user"] == "u"
    assert options["password"] == SECRET
    assert options["token"] == "t"
    assert options["user_credentials"] == str(creds)
    assert isinstance(options["tls"], ssl.SSLContext)
    assert options["tls_hostname"] == "nats.internal"
    assert nats_connect_options(Settings()) == {}
    assert SECRET not in repr(Settings(nats_password=SECRET))  # type: ignore[arg-type]
    assert redact(f"nats://u:{SECRET}@127.0.0.1:4222") == "nats://***@127.0.0.1:4222"
    assert redact("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
