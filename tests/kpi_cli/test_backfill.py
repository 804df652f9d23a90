"""``kpi backfill`` refuses bad input with a clear reason and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kpi_cli.app import app
from tests.olist import olist_folder

pytestmark = pytest.mark.prometheus


def test_bad_input_is_refused_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    empty = tmp_path / "empty"
    (empty / "events").mkdir(parents=True)
    out = tmp_path / "blocks"

    def run(*args: str) -> tuple[int, str]:
        res = runner.invoke(app, ["backfill", *args, "--out", str(out)])
        return res.exit_code, res.output

    code, text = run(str(empty))
    assert code == 2 and "no valid events" in text
    data = olist_folder(tmp_path / "olist")
    code, text = run(str(data), "--from", "2019-01-01T00:00:00Z", "--to", "2019-02-01T00:00:00Z")
    assert code == 2 and "no events between" in text
    code, text = run(str(data), "--from", "2018-03-05T00:00:00Z", "--to", "2018-03-01T00:00:00Z")
    assert code == 2 and "must be after --from" in text
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    code, text = run(str(data))
    assert code == 2 and "promtool not found on PATH" in text
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
