"""The stage targets live in one place: the exporter exposes those of service-standards.yaml.

The expected gauges are computed from the YAML text itself (``yaml.safe_load``), not from
``ServiceStandards``: a facility type takes its own ``dwell_hours`` entry, else ``default``,
else it has no series; the leg target is ``leg_hours.default``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kpi.standards import DEFAULT_STANDARDS, STANDARDS_FILE, ReferenceFileError, load_standards
from kpi_cli.app import app
from tests.exporterkit import ExporterProcess, Feed, append_jsonl, wait_until
from tests.exporters.hostile import Samples, config_valid, start

DWELL = "postal_stage_dwell_target_seconds"
LEG = "postal_stage_leg_target_seconds"
#: The facility types of facilities.csv (docs/data-contract.md), written out here.
TYPES = ("collection", "processing", "delivery")


def standards_text(stages: dict[str, Any] | None) -> str:
    doc = DEFAULT_STANDARDS.model_dump(mode="json")
    doc.pop("stages", None)
    if stages is not None:
        doc["stages"] = stages
    return yaml.safe_dump(doc)


def expected(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The target series a standard's text implies, by hand from the parsed YAML."""
    stages = yaml.safe_load(text).get("stages") or {}
    dwell = stages.get("dwell_hours") or {}
    out = {}
    for ftype in TYPES:
        hours = dwell.get(ftype, dwell.get("default"))
        if hours is not None:
            out[(DWELL, (("facility_type", ftype),))] = float(hours) * 3600
    leg = (stages.get("leg_hours") or {}).get("default")
    if leg is not None:
        out[(LEG, ())] = float(leg) * 3600
    return out


def targets(samples: Samples | None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {k: v for k, v in (samples or {}).items() if k[0] in (DWELL, LEG)}


def test_exporter_exposes_the_targets_of_the_standard_it_loaded(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    first = standards_text(
        {"dwell_hours": {"processing": 7.5, "default": 20}, "leg_hours": {"default": 30}}
    )
    (data / STANDARDS_FILE).write_text(first)
    append_jsonl(data / "events" / "live.jsonl", Feed().interleaved(0, 5))
    exporter = start(running, data, tmp_path / "state")
    got = targets(exporter.scrape())
    assert got == expected(first)
    # by hand as well: processing its own, the other two the default
    assert got[(DWELL, (("facility_type", "delivery"),))] == 20 * 3600
    assert got[(DWELL, (("facility_type", "processing"),))] == 7.5 * 3600

    # A new version is picked up: a type without a target and no leg target lose their series.
    second = standards_text({"dwell_hours": {"processing": 9, "delivery": 30}})
    (data / STANDARDS_FILE).write_text(second)
    wait_until(lambda: targets(exporter.scrape()) == expected(second))
    assert (LEG, ()) not in expected(second)

    # A typo in the facility types is refused with its reason; the last good targets stay.
    typo = standards_text({"dwell_hours": {"hub": 6, "processing": 1}})
    (data / STANDARDS_FILE).write_text(typo)
    wait_until(lambda: config_valid(exporter.scrape(), STANDARDS_FILE) == 0)
    assert targets(exporter.scrape()) == expected(second)
    result = CliRunner().invoke(app, ["validate", str(data), "--rejects", str(tmp_path / "r")])
    assert result.exit_code == 1 and "'hub'" in result.output, result.output

    # Without stages: no target series at all (the stage alerts stay silent).
    none = standards_text(None)
    (data / STANDARDS_FILE).write_text(none)
    wait_until(lambda: config_valid(exporter.scrape(), STANDARDS_FILE) == 1)
    assert targets(exporter.scrape()) == {} == expected(none)
    assert exporter.terminate() == 0


@pytest.mark.parametrize(
    ("stages", "word"),
    [
        ({"dwell_hours": {"hub": 6}}, "'hub'"),
        ({"dwell_hours": {"sorting_center": 12, "processing": 6}}, "'sorting_center'"),
        ({"dwell_hours": {"Processing": 6}}, "'Processing'"),
        ({"leg_hours": {"CN-GD": 24}}, "'CN-GD'"),
    ],
)
def test_unknown_stage_keys_are_refused_with_the_reason(
    tmp_path: Path, stages: dict[str, Any], word: str
) -> None:
    (tmp_path / STANDARDS_FILE).write_text(standards_text(stages))
    with pytest.raises(ReferenceFileError) as info:
        load_standards(tmp_path)
    (problem,) = info.value.problems
    assert problem.startswith("stages.") and word in problem
    if "dwell_hours" in stages:  # names the vocabulary to pick from
        assert all(t in problem for t in TYPES)


def test_every_facility_type_and_default_is_accepted(tmp_path: Path) -> None:
    stages = {"dwell_hours": {t: i + 1 for i, t in enumerate((*TYPES, "default"))}}
    (tmp_path / STANDARDS_FILE).write_text(standards_text(stages))
    loaded = load_standards(tmp_path).stages
    assert [loaded.dwell_target(t) for t in TYPES] == [1, 2, 3]
    assert loaded.dwell_target("unknown") == 4
