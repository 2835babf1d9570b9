"""The configuration file of the `nats-server` that `msc up` embeds: where JetStream stores
its streams, how often it fsyncs them, and where it serves its monitoring endpoints."""

from __future__ import annotations

import json
from pathlib import Path

from microservice_connector.settings import Settings

CONFIG_NAME = "nats-server.conf"


def sync_always_by_default() -> bool:
    """Whether JetStream should fsync every write: `MSC_NATS_SYNC_ALWAYS`, off by default.
    Off, an OS crash or power loss may cost the broker its last acknowledged messages (it
    fsyncs every 2 minutes); the relays' audit finds them missing and publishes them again
    from the outbox, so that costs seconds, never an event."""
    return Settings().nats_sync_always


def nats_server_config(store_dir: Path, *, sync_always: bool, monitor_port: int) -> str:
    """The configuration text: JetStream stored under `store_dir`, fsynced on every write if
    `sync_always` (else every 2 minutes, the server's default), monitoring on 127.0.0.1."""
    lines = [
        f"http: {json.dumps(f'127.0.0.1:{monitor_port}')}",
        "jetstream {",
        f"  store_dir: {json.dumps(str(store_dir), ensure_ascii=False)}",
    ]
    if sync_always:
        lines.append("  sync_interval: always")
    return "\n".join([*lines, "}", ""])


def write_nats_server_config(data_dir: Path, *, sync_always: bool, monitor_port: int) -> Path:
    """Write the configuration for a server keeping its streams in `data_dir/nats`; its path."""
    path = data_dir / CONFIG_NAME
    text = nats_server_config(data_dir / "nats", sync_always=sync_always, monitor_port=monitor_port)
    path.write_text(text, encoding="utf-8")
    return path
