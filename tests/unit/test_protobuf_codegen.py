"""The committed Protobuf code is what the committed .proto files generate (`make proto`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import microservice_connector.events.proto as proto_package

PROTO_DIR = Path(proto_package.__file__).parent
PROTOS = sorted(PROTO_DIR.glob("*.proto"))


def test_the_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    assert [p.name for p in PROTOS] == ["billing.proto", "cart.proto"]
    generated = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            *map(str, PROTOS),
        ],
        capture_output=True,
        text=True,
    )
    assert generated.returncode == 0, generated.stderr
    fresh = sorted(path.name for path in tmp_path.iterdir())
    assert fresh == ["billing_pb2.py", "billing_pb2.pyi", "cart_pb2.py", "cart_pb2.pyi"]
    stale = [
        name for name in fresh if (tmp_path / name).read_bytes() != (PROTO_DIR / name).read_bytes()
    ]
    if stale:
        pytest.fail(f"out of date: {', '.join(stale)}; run `make proto` and commit the result")
