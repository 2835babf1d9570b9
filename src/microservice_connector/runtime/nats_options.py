"""What the NATS client is given besides server URLs: user/password, token, credentials file,
TLS. Secrets stay `SecretStr` in the settings and are unwrapped only here, into the options
handed to `connect_nats`; nothing here logs them, and `redact` hides any in a URL."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from microservice_connector.settings import Settings


def nats_connect_options(settings: Settings) -> dict[str, Any]:
    """Keyword options for `connect_nats` (`nats.aio.client.Client.connect`) from `MSC_NATS_*`."""
    options: dict[str, Any] = {}
    if settings.nats_user is not None:
        options["user"] = settings.nats_user
    if settings.nats_password is not None:
        options["password"] = settings.nats_password.get_secret_value()
    if settings.nats_token is not None:
        options["token"] = settings.nats_token.get_secret_value()
    if settings.nats_credentials is not None:
        options["user_credentials"] = str(settings.nats_credentials)
    context = _tls_context(settings)
    if context is not None:
        options["tls"] = context
        if settings.nats_tls_hostname:
            options["tls_hostname"] = settings.nats_tls_hostname
    return options


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    wanted = settings.nats_tls or any(
        value is not None
        for value in (settings.nats_tls_ca, settings.nats_tls_cert, settings.nats_tls_key)
    )
    if not wanted:
        return None
    ca = str(settings.nats_tls_ca) if settings.nats_tls_ca is not None else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if settings.nats_tls_cert is not None:
        key = str(settings.nats_tls_key) if settings.nats_tls_key is not None else None
        context.load_cert_chain(str(settings.nats_tls_cert), key)
    return context


def redact(url: str) -> str:
    """`url` with any user and password in it replaced by `***`, fit for logs and errors."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))
