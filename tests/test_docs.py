"""Names in the hand-written pages exist: every alert README.md or docs/ names is generated."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from exporters.mixin.alerts import alert_names
from exporters.mixin.config import MixinConfig

ROOT = Path(__file__).resolve().parents[1]
#: Our alerts are CamelCase words starting with "Postal" (see exporters/mixin/alerts.py).
ALERT_WORD = re.compile(r"\bPostal[A-Z][A-Za-z0-9]+\b")


def pages() -> list[Path]:
    """README.md and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def named_alerts(text: str) -> set[str]:
    """The alert-like words of a page."""
    return set(ALERT_WORD.findall(text))


def test_the_pattern_finds_alert_names_and_nothing_else() -> None:
    text = "alert `PostalFacilityBacklogAboveThreshold` fires; postal_backlog_items, Postal KPIs"
    assert named_alerts(text) == {"PostalFacilityBacklogAboveThreshold"}


def test_every_alert_named_in_the_docs_exists() -> None:
    # The generated rule file is what Prometheus loads; the mixin must agree with it.
    rules = yaml.safe_load((ROOT / "prometheus" / "alerts.yml").read_text())
    loaded = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert loaded == set(alert_names(MixinConfig()))
    unknown = {
        f"{page.relative_to(ROOT)}: {name}"
        for page in pages()
        for name in named_alerts(page.read_text())
        if name not in loaded
    }
    assert not unknown, f"alerts named in the docs but not generated: {sorted(unknown)}"
    # Not vacuous: the pages do name alerts.
    assert sum(len(named_alerts(page.read_text())) for page in pages()) >= 5
