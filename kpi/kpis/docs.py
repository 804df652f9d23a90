"""The KPI catalog as text: the ``kpi report --list`` table and ``docs/kpis.md``."""

from __future__ import annotations

from kpi.kpis.catalog import GRANULARITIES, KPIS


def catalog_table() -> str:
    """One line per KPI: name, unit, dimensions, definition."""
    width = max(len(k.name) for k in KPIS)
    lines = [f"{'name':<{width}}  {'unit':<11}  {'kind':<8}  dimensions / definition"]
    for k in KPIS:
        kind = "window" if k.windowed else "as-of"
        lines.append(f"{k.name:<{width}}  {k.unit:<11}  {kind:<8}  [{', '.join(k.dimensions)}]")
        lines.append(f"{'':<{width}}  {'':<11}  {'':<8}  {k.description}")
    return "\n".join(lines)


def catalog_markdown() -> str:
    """``docs/kpis.md``: the catalog as a Markdown page."""
    rows = [
        f"| `{k.name}` | {k.unit} | {'window' if k.windowed else 'as-of'} | "
        f"{', '.join(k.dimensions)} | {k.description.replace('|', '/')} |"
        for k in KPIS
    ]
    return "\n".join(
        [
            "# KPI catalog",
            "",
            "Generated from `kpi/kpis/catalog.py` by `kpi docs` (a test checks it is current).",
            "Window KPIs count what happened in `[from, to)`; as-of KPIs are a snapshot at `as_of`.",
            f"Window KPIs can be bucketed by time: {', '.join(GRANULARITIES)} (bucket start in the",
            "requested time zone, weeks start on Monday). `region` means the item's destination",
            "for item KPIs, the complaint's region for complaints and the facility's region for backlog",
            "and dwell. Stage KPIs (dwell, leg, first_mile, last_mile: the four links, collection,",
            "processing, transport and delivery) are computed per scan from the validated events up to",
            "as-of (repeated event ids once, UPU aliases mapped); `facility` of the last mile is the",
            "delivering office (the item's last arrival before delivery). Stage targets come from the",
            "optional `stages:` of `service-standards.yaml`, e.g. `stages: {dwell_hours: {processing: 6,",
            "collection: 12, delivery: 24}, leg_hours: {default: 24}}` (dwell keys: the facility types",
            "of `facilities.csv` or `default`; any other key refuses the file). The exporter exposes the",
            "targets it loaded (`postal_stage_dwell_target_seconds`, `postal_stage_leg_target_seconds`)",
            "and the stage alerts compare with those: one place for the targets.",
            "",
            "Rows: one per group (and period) in which the KPI's family (flow, complaint, backlog,",
            "network, open complaint, dwell, leg, first mile, last mile) has any activity; a count is 0 where the family has activity",
            "but the KPI itself has none, and a ratio is null where its denominator is 0.",
            "",
            "| KPI | unit | kind | dimensions | definition |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
