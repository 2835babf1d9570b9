"""The configuration `msc up` writes for its embedded nats-server is one the server reads,
wherever the data folder is."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from microservice_connector.runtime.nats_server_config import write_nats_server_config
from microservice_connector.runtime.system import nats_server_binary

pytestmark = pytest.mark.nats


@pytest.mark.parametrize("folder", ["data", "café", "with space", 'quote"d', "back\\slash"])
def test_the_server_reads_the_configuration_for_any_data_folder(
    tmp_path: Path, folder: str
) -> None:
    # json.dumps wrote "café" as "caf\u00e9", which nats-server's parser refuses.
    data_dir = tmp_path / folder
    data_dir.mkdir()
    config = write_nats_server_config(data_dir, sync_always=True, monitor_port=8222)
    checked = subprocess.run(
        [nats_server_binary(), "-c", str(config), "-t"], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
