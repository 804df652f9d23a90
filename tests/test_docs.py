"""Names in the hand-written pages exist: every alert README.md or docs/ names is generated,
and the event vocabulary of docs/data-contract.md is the rules table's (kpi/events.py)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from exporters.mixin.alerts import alert_names
from exporters.mixin.config import MixinConfig
from kpi.events import EVENT_REQUIRED_ON, EVENT_TYPES, UPU_ALIASES

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


# --- the event vocabulary of docs/data-contract.md is the rules table's ------------------

CONTRACT = ROOT / "docs" / "data-contract.md"
#: A row of the ``events/`` table: ``| column(s) | type | required | meaning |``.
ROW = re.compile(r"^\|(?P<cols>[^|]+)\|[^|]+\|(?P<required>[^|]+)\|(?P<meaning>.*)\|\s*$")
TICKED = re.compile(r"`([^`]+)`")


def _events_rows() -> list[re.Match[str]]:
    """The rows of the ``events/`` section's table."""
    section = CONTRACT.read_text().split("## `events/`", 1)[1].split("\n## ", 1)[0]
    return [m for line in section.splitlines() if (m := ROW.match(line))]


def documented_vocabulary(rows: list[re.Match[str]]) -> tuple[list[str], dict[str, str]]:
    """The event types (in the order listed) and the aliases of the ``event`` row."""
    (meaning,) = [m["meaning"] for m in rows if TICKED.findall(m["cols"]) == ["event"]]
    names, _, alias_text = meaning.partition(";")
    aliases: dict[str, str] = {}
    for group in alias_text.split(":", 1)[1].split(";"):
        codes, _, name = group.partition("→")
        aliases |= {code.strip(): name.strip() for code in codes.split(",")}
    return TICKED.findall(names), aliases


def documented_required(rows: list[re.Match[str]]) -> dict[str, set[str]]:
    """Event type -> the fields documented as required ``on `type` ``."""
    out: dict[str, set[str]] = {}
    for m in rows:
        required = m["required"].strip()
        if required.startswith("on "):
            for name in TICKED.findall(required):
                out.setdefault(name, set()).update(TICKED.findall(m["cols"]))
    return out


def test_the_data_contract_lists_the_rules_tables_vocabulary() -> None:
    """Types (in lifecycle order), UPU aliases and per-type required fields of the page are
    the rules table's (kpi/events.py): a new type or alias is documented or this fails."""
    rows = _events_rows()
    names, aliases = documented_vocabulary(rows)
    assert names == list(EVENT_TYPES), f"{CONTRACT.name}: event types differ from kpi/events.py"
    assert aliases == UPU_ALIASES, f"{CONTRACT.name}: UPU aliases differ from kpi/events.py"
    required = {name: set(fields) for name, fields in EVENT_REQUIRED_ON.items()}
    assert documented_required(rows) == required, f"{CONTRACT.name}: required fields differ"


def test_the_vocabulary_parser_sees_a_drift() -> None:
    """Not vacuous: the parser reads a changed row differently."""
    row = (
        "| `event` | string | yes | `accepted`, `lost`; UPU aliases: EMA→accepted; EMX, EMY→lost |"
    )
    rows = [m for m in [ROW.match(row)] if m]
    assert documented_vocabulary(rows) == (
        ["accepted", "lost"],
        {"EMA": "accepted", "EMX": "lost", "EMY": "lost"},
    )
    req = ROW.match("| `a`, `b` | string | on `lost` | x |")
    assert req is not None and documented_required([req]) == {"lost": {"a", "b"}}
