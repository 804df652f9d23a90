"""Schemathesis over the duty desk's routes of a real ``kpi api`` (duty key, SQLite register)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kpi.api.settings import Role, hash_key
from tests.api.conftest import write_hand_folder
from tests.api.test_live import CHECKS
from tests.duty.conftest import start_api

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_schemathesis_finds_no_5xx_and_no_schema_violation_in_incidents(tmp_path: Path) -> None:
    """Generated requests (valid and invalid) on /incidents: no 5xx, nothing off the schema."""
    config = tmp_path / "api.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "api_keys": [
                    {"name": "desk", "sha256": hash_key("desk-secret"), "role": Role.DUTY.value}
                ]
            }
        )
    )
    api = start_api(
        tmp_path, write_hand_folder(tmp_path / "data"), f"sqlite:///{tmp_path / 'duty.db'}",
        "--config", str(config),
    )  # fmt: skip
    try:
        st = Path(sys.executable).with_name("schemathesis")
        result = subprocess.run(
            [str(st), "run", f"{api.url}/openapi.json", "--include-tag", "incidents",
             "--checks", CHECKS, "--max-examples", "8", "--seed", "42", "--workers", "1",
             "--request-timeout", "20", "-H", "X-API-Key: desk-secret"],
            check=False, capture_output=True, text=True, timeout=200, cwd=tmp_path,
            env=os.environ | {"NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
        )  # fmt: skip
    finally:
        api.kill()
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    # rc 0: no failure (warnings such as 404s for made-up ids may remain).
    summary = result.stdout.rsplit("SUMMARY", 1)[-1]
    assert "passed" in summary and "failure" not in summary, summary
