"""``kpi serve``: the exporter and the API live and die together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from exporters import serving
from tests.api.conftest import write_hand_folder
from tests.exporterkit import alive, only_child
from tests.netkit import free_port
from tests.promkit import wait_for


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:
        return int(response.status)


def test_an_exporter_that_gives_up_stops_the_api_too(tmp_path: Path) -> None:
    """Its serving process killed until the exporter gives up: the whole process exits 1."""
    data = write_hand_folder(tmp_path / "data")
    metrics, api = free_port(), free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kpi_cli", "serve", str(data),
             "--exporter-listen", f"127.0.0.1:{metrics}", "--api-listen", f"127.0.0.1:{api}",
             "--state", str(tmp_path / "state"), "--database", "none"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            api_ready = _status(f"http://127.0.0.1:{api}/readyz") == 200
            return api_ready and _status(f"http://127.0.0.1:{metrics}/metrics") == 200

        wait_for(up, timeout=90, what="kpi serve")
        for _ in range(serving.RESTARTS + 1):
            if proc.poll() is not None:
                break
            child = only_child(proc.pid)
            os.kill(child, signal.SIGKILL)
            wait_for(lambda c=child: not alive(c), timeout=10, what="the child to die")
            time.sleep(serving.HEARTBEAT * 2)
        assert proc.wait(30) == 1, log.read_text()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    text = log.read_text()
    assert "error: the exporter stopped (the serving process ended" in text, text
    assert "the API stopped with it" in text and "Traceback" not in text
    for port in (api, metrics):
        try:
            _status(f"http://127.0.0.1:{port}/readyz")
        except OSError:
            continue
        raise AssertionError(f"port {port} still answers after kpi serve exited")
