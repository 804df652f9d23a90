"""Closed by default: no open API on a network address, key configuration checked at start."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kpi.api.settings import ApiKey, Settings, StartupError, check_keys, hash_key, is_loopback
from kpi.api.startup import check_startup, known_regions
from kpi_cli.app import app
from tests.api.conftest import write_hand_folder
from tests.netkit import free_port
from tests.promkit import wait_for


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_hand_folder(tmp_path / "data")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.1.2.3", "api.example.org"]))


def test_network_address_without_keys_refuses_and_names_the_fix(data: Path, tmp_path: Path) -> None:
    for listen in (f"0.0.0.0:{free_port()}", f"[::]:{free_port()}", f"10.0.0.1:{free_port()}"):
        code, out = run("api", str(data), "--listen", listen, "--database", "none")
        assert code == 2, out
        assert "--insecure-no-auth" in out and "api_keys" in out
    code, out = run(
        "serve", str(data), "--api-listen", "0.0.0.0:8000", "--state", str(tmp_path / "s")
    )
    assert code == 2 and "--insecure-no-auth" in out
    assert not (tmp_path / "s").exists()  # refused before the exporter started


def test_insecure_no_auth_starts_and_warns(data: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kpi_cli", "api", str(data), "--listen", f"0.0.0.0:{port}",
             "--database", "none", "--insecure-no-auth"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return bool(r.status == 200)

        wait_for(ready, timeout=90, what="kpi api --insecure-no-auth")
        text = log.read_text()
        assert "WARNING" in text and "anyone on the network" in text
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_keys_make_a_network_address_fine(data: Path) -> None:
    settings = Settings(data_dir=data, api_keys=(ApiKey(name="a", sha256=hash_key("s")),))
    assert check_startup(settings, "0.0.0.0", insecure_no_auth=False) is None


def test_duplicate_digest_names_both_entries(data: Path, tmp_path: Path) -> None:
    config = tmp_path / "api.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "api_keys": [
                    {"name": "analyst", "sha256": hash_key("same")},
                    {"name": "desk", "sha256": hash_key("same"), "role": "duty"},
                ]
            }
        )
    )
    code, out = run("api", str(data), "--config", str(config), "--database", "none")
    assert code == 2
    assert "api_keys[1] (desk)" in out and "api_keys[0] (analyst)" in out


def test_region_scope_unknown_to_the_facilities_is_an_error(data: Path) -> None:
    assert known_regions(Settings(data_dir=data)) == {"CN-BJ", "CN-GD", "CN-SH"}
    good = ApiKey(name="gd", sha256=hash_key("a"), regions=("CN-GD",))
    check_keys(Settings(data_dir=data, api_keys=(good,)), known_regions(Settings(data_dir=data)))
    bad = ApiKey(name="guangdong-desk", sha256=hash_key("b"), regions=("GD",))
    settings = Settings(data_dir=data, api_keys=(good, bad))
    with pytest.raises(StartupError) as exc:
        check_startup(settings, "127.0.0.1", insecure_no_auth=False)
    assert "api_keys[1] (guangdong-desk)" in str(exc.value) and "'GD'" in str(exc.value)
    assert "CN-GD" in str(exc.value)  # the regions that do exist
