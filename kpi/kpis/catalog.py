"""The KPI catalog: every KPI's name, unit, family, dimensions and definition.

The report, the API, ``docs/kpis.md`` and the exporter all read this table; a KPI
name is spelled here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Family(StrEnum):
    """KPIs of one family are computed together from the same rows."""

    FLOW = "flow"  # lifecycle items by the time of one of their events, in a window
    COMPLAINT = "complaint"  # complaint records opened in a window
    BACKLOG = "backlog"  # items waiting at a facility at as-of
    NETWORK = "network"  # unfinished items at as-of
    OPEN_COMPLAINT = "open_complaint"  # complaints open at as-of
    DWELL = "dwell"  # departures in a window: processing time at a facility
    LEG = "leg"  # arrivals in a window: transport time between facilities
    FIRST_MILE = "first_mile"  # acceptance to first departure (collection)
    LAST_MILE = "last_mile"  # arrival at the delivering office to delivery


#: Families measured over the window [from, to); the others are snapshots at as-of.
WINDOW_FAMILIES: Final = frozenset(
    {
        Family.FLOW,
        Family.COMPLAINT,
        Family.DWELL,
        Family.LEG,
        Family.FIRST_MILE,
        Family.LAST_MILE,
    }
)
#: The stage families (the four links: collection, processing, transport, delivery).
STAGE_FAMILIES: Final = frozenset({Family.DWELL, Family.LEG, Family.FIRST_MILE, Family.LAST_MILE})

ITEM_DIMS: Final = ("product", "origin", "destination", "region")
COMPLAINT_DIMS: Final = ("region", "product", "category")
BACKLOG_DIMS: Final = ("facility", "facility_type", "region", "product")
DWELL_DIMS: Final = ("facility", "facility_type", "region")
LEG_DIMS: Final = ("from_facility", "to_facility", "from_region", "to_region")
FIRST_MILE_DIMS: Final = ("origin", "product")
LAST_MILE_DIMS: Final = ("destination", "facility", "product")

#: Dimensions every family supports, in output order.
FAMILY_DIMS: Final[dict[Family, tuple[str, ...]]] = {
    Family.FLOW: ITEM_DIMS,
    Family.COMPLAINT: COMPLAINT_DIMS,
    Family.BACKLOG: BACKLOG_DIMS,
    Family.NETWORK: ITEM_DIMS,
    Family.OPEN_COMPLAINT: COMPLAINT_DIMS,
    Family.DWELL: DWELL_DIMS,
    Family.LEG: LEG_DIMS,
    Family.FIRST_MILE: FIRST_MILE_DIMS,
    Family.LAST_MILE: LAST_MILE_DIMS,
}
ALL_DIMS: Final = (
    "facility",
    "facility_type",
    "product",
    "origin",
    "destination",
    "region",
    "category",
    "from_facility",
    "to_facility",
    "from_region",
    "to_region",
)
GRANULARITIES: Final = ("hour", "day", "week", "month")
AGE_BANDS: Final = ("lt_6h", "6h_12h", "12h_24h", "24h_48h", "ge_48h")
#: Upper edges (hours) of the age bands; the last band is open.
AGE_BAND_EDGES: Final = (6, 12, 24, 48)


@dataclass(frozen=True)
class Kpi:
    """One KPI of the catalog."""

    name: str
    unit: str  # items, ratio, hours, complaints, per_million, facilities
    family: Family
    description: str
    dtype: str = "int"  # int or float, for API column annotations

    @property
    def dimensions(self) -> tuple[str, ...]:
        """Dimensions this KPI can be grouped by."""
        return FAMILY_DIMS[self.family]

    @property
    def windowed(self) -> bool:
        """Whether the KPI is measured over [from, to) and can be bucketed by time."""
        return self.family in WINDOW_FAMILIES


_F, _C, _B, _N, _O = (
    Family.FLOW,
    Family.COMPLAINT,
    Family.BACKLOG,
    Family.NETWORK,
    Family.OPEN_COMPLAINT,
)
_D, _L, _FM, _LM = (Family.DWELL, Family.LEG, Family.FIRST_MILE, Family.LAST_MILE)
_DWELL = (
    "dwell = a `departed` scan's ts minus the same item's latest `arrived` scan at the same"
    " facility at or before it"
)
_LEG = (
    "leg = an `arrived` scan at facility g minus the same item's latest `departed` scan"
    " strictly before it among those at other facilities f (route f -> g; at equal times"
    " the greatest facility name)"
)
_FIRST = (
    "first mile = the item's first `departed` scan at or after its acceptance minus the"
    " acceptance, over items whose first departure is in the window"
)
_LAST = (
    "last mile = the delivery (earliest `delivered` scan) minus the item's latest `arrived`"
    " scan at or before it (`facility` = that arrival's, the delivering office), over items"
    " delivered in the window that have such an arrival"
)
_INTERP = "linear interpolation between order statistics, as transit_hours_p50"

_END_TO_END_KPIS: Final[tuple[Kpi, ...]] = (
    Kpi(
        "accepted_items",
        "items",
        _F,
        "Items whose acceptance (earliest `accepted` scan) is in the window.",
    ),
    Kpi(
        "delivered_items",
        "items",
        _F,
        "Items whose delivery (earliest `delivered` scan) is in the window, with or without a recorded acceptance.",
    ),
    Kpi(
        "delivered_without_acceptance",
        "items",
        _F,
        "Delivered items in the window that have no `accepted` scan; excluded from timeliness ratios, never guessed.",
    ),
    Kpi("returned_items", "items", _F, "Items whose earliest `returned` scan is in the window."),
    Kpi(
        "on_time_items",
        "items",
        _F,
        "Delivered in the window with `delivered_at <= promised_by` (delivered exactly at the deadline is on time).",
    ),
    Kpi(
        "on_time_ratio",
        "ratio",
        _F,
        "on_time_items / delivered items in the window that have an acceptance and a known promise. Null when there are none.",
        "float",
    ),
    Kpi(
        "late_1d_items",
        "items",
        _F,
        "Delivered in the window, late by more than 0 and at most 1 day (24 h) past `promised_by`.",
    ),
    Kpi(
        "late_2d_items",
        "items",
        _F,
        "Delivered in the window, late by more than 1 and at most 2 days past `promised_by`.",
    ),
    Kpi(
        "late_3d_plus_items",
        "items",
        _F,
        "Delivered in the window, late by more than 2 days past `promised_by`.",
    ),
    Kpi(
        "transit_hours_mean",
        "hours",
        _F,
        "Mean of delivered_at - accepted_at in hours, over items delivered in the window with an acceptance (China's full-process time limit).",
        "float",
    ),
    Kpi(
        "transit_hours_p50",
        "hours",
        _F,
        "Median transit hours (linear interpolation between order statistics), same items as transit_hours_mean.",
        "float",
    ),
    Kpi(
        "transit_hours_p90",
        "hours",
        _F,
        "90th percentile of transit hours (linear interpolation), same items as transit_hours_mean.",
        "float",
    ),
    Kpi(
        "within_72h_ratio",
        "ratio",
        _F,
        "Share of items delivered in the window (with an acceptance) whose transit time is <= 72 h (China's 72-hour on-time rate).",
        "float",
    ),
    Kpi(
        "first_attempt_ratio",
        "ratio",
        _F,
        "Items whose first delivery attempt (earliest `delivered`/`delivery_failed`) is in the window and was a delivery / items with a first attempt in the window.",
        "float",
    ),
    Kpi(
        "complaints",
        "complaints",
        _C,
        "Complaints opened in the window (latest version of each complaint_id; opened at or before as-of).",
    ),
    Kpi(
        "valid_complaints",
        "complaints",
        _C,
        "Complaints opened in the window whose operator responsibility is established (`valid` true).",
    ),
    Kpi(
        "complaints_per_million",
        "per_million",
        _C,
        "complaints / accepted_items x 1,000,000 for the same window, region (= items' destination) and product. Null, not infinity, when nothing was accepted.",
        "float",
    ),
    Kpi(
        "resolved_within_7d_ratio",
        "ratio",
        _C,
        "Of complaints opened in the window whose 7-day reply deadline has passed at as-of, the share resolved within 7 x 24 h of opening. Null when none is due.",
        "float",
    ),
    Kpi(
        "backlog_items",
        "items",
        _B,
        "Unfinished items whose last scan is `arrived` or `delivery_failed` at the facility (waiting there).",
    ),
    Kpi(
        "backlog_oldest_hours",
        "hours",
        _B,
        "Age (as-of - last scan) of the oldest waiting item, in hours.",
        "float",
    ),
    *(
        Kpi(
            f"backlog_items_{band}",
            "items",
            _B,
            f"Waiting items whose age is in the band {band.replace('_', ' ')} (bands: <6 h, 6-12 h, 12-24 h, 24-48 h, >=48 h; lower edge inclusive).",
        )
        for band in AGE_BANDS
    ),
    Kpi(
        "backlog_threshold_items",
        "items",
        _B,
        "Sum of the facilities' `backlog_threshold` (per facility when grouped by facility; null when unset).",
    ),
    Kpi(
        "backlog_over_threshold",
        "facilities",
        _B,
        "Facilities whose backlog_items exceeds their `backlog_threshold` (0 or 1 per facility).",
    ),
    Kpi(
        "in_network_items",
        "items",
        _N,
        "Unfinished items (neither delivered nor returned) with at least one scan at or before as-of.",
    ),
    Kpi(
        "overdue_items",
        "items",
        _N,
        "Unfinished items whose promise has passed (`promised_by < as_of`).",
    ),
    Kpi(
        "stalled_items",
        "items",
        _N,
        "Unfinished items with no scan for more than the stall limit (default 48 h): the lost-item early warning.",
    ),
    Kpi(
        "open_complaints",
        "complaints",
        _O,
        "Complaints opened at or before as-of and not resolved at as-of.",
    ),
    Kpi(
        "overdue_complaints",
        "complaints",
        _O,
        "Open complaints opened more than 7 days before as-of (past the reply deadline).",
    ),
)

STAGE_KPIS: Final[tuple[Kpi, ...]] = (
    Kpi(
        "handled_items",
        "items",
        _D,
        "Departures (`departed` scans) in the window, by the facility departed from"
        " (`region`/`facility_type` = that facility's).",
    ),
    Kpi(
        "departures_without_arrival",
        "items",
        _D,
        "Departures in the window with no `arrived` scan of the item at that facility at or"
        " before them (e.g. leaving the collection office where it was accepted): left out"
        " of the dwell times.",
    ),
    Kpi(
        "dwell_hours_mean",
        "hours",
        _D,
        f"Mean dwell hours over departures in the window ({_DWELL}); departures without"
        " arrival left out.",
        "float",
    ),
    Kpi(
        "dwell_hours_p50",
        "hours",
        _D,
        f"Median dwell hours ({_INTERP}), same departures as dwell_hours_mean.",
        "float",
    ),
    Kpi(
        "dwell_hours_p90",
        "hours",
        _D,
        f"90th percentile of dwell hours ({_INTERP}), same departures as dwell_hours_mean.",
        "float",
    ),
    Kpi(
        "dwell_within_target_ratio",
        "ratio",
        _D,
        "Share of timed departures whose dwell <= the facility type's target"
        " (`stages.dwell_hours` of the service standard: by facility type, else `default`);"
        " null without targets.",
        "float",
    ),
    Kpi(
        "leg_items",
        "items",
        _L,
        f"Legs ending in the window ({_LEG}); `from_region`/`to_region` are the two"
        " facilities' regions.",
    ),
    Kpi("leg_hours_mean", "hours", _L, "Mean leg hours over legs ending in the window.", "float"),
    Kpi(
        "leg_hours_p50",
        "hours",
        _L,
        f"Median leg hours ({_INTERP}), same legs as leg_items.",
        "float",
    ),
    Kpi(
        "leg_hours_p90",
        "hours",
        _L,
        f"90th percentile of leg hours ({_INTERP}), same legs as leg_items.",
        "float",
    ),
    Kpi(
        "leg_within_target_ratio",
        "ratio",
        _L,
        "Share of legs ending in the window whose hours <= `stages.leg_hours.default` of the"
        " service standard; null without a target.",
        "float",
    ),
    Kpi(
        "first_mile_hours_p50",
        "hours",
        _FM,
        f"Median first-mile hours ({_FIRST}; {_INTERP}).",
        "float",
    ),
    Kpi(
        "first_mile_hours_p90",
        "hours",
        _FM,
        f"90th percentile of first-mile hours ({_FIRST}).",
        "float",
    ),
    Kpi(
        "dispatched_same_day_ratio",
        "ratio",
        _FM,
        "Of items accepted in the window whose deposit day has ended at as-of, the share whose"
        " first departure is on the deposit day: the local date of acceptance in the product's"
        " time zone, the next day when accepted after the product's cut-off (calendar days)."
        " Unknown products are left out.",
        "float",
    ),
    Kpi(
        "last_mile_hours_p50",
        "hours",
        _LM,
        f"Median last-mile hours ({_LAST}; {_INTERP}).",
        "float",
    ),
    Kpi(
        "last_mile_hours_p90",
        "hours",
        _LM,
        f"90th percentile of last-mile hours ({_LAST}).",
        "float",
    ),
)
KPIS: Final[tuple[Kpi, ...]] = (*_END_TO_END_KPIS, *STAGE_KPIS)

KPI_BY_NAME: Final[dict[str, Kpi]] = {k.name: k for k in KPIS}


class KpiError(ValueError):
    """A KPI request that cannot be answered; the message says what to change."""


def resolve(names: list[str] | None, by: list[str], granularity: str | None) -> list[Kpi]:
    """The requested KPIs, checked against dimensions and granularity.

    With no names, every KPI that supports ``by`` (and the granularity) is chosen.
    """
    unknown_dims = [d for d in by if d not in ALL_DIMS]
    if unknown_dims:
        raise KpiError(f"unknown dimension(s) {unknown_dims}; known: {list(ALL_DIMS)}")
    if granularity is not None and granularity not in GRANULARITIES:
        raise KpiError(f"unknown granularity {granularity!r}; use one of {list(GRANULARITIES)}")
    if not names:
        chosen = [
            k for k in KPIS if set(by) <= set(k.dimensions) and (granularity is None or k.windowed)
        ]
        if not chosen:
            raise KpiError(f"no KPI supports the dimensions {by}")
        return chosen
    out: list[Kpi] = []
    for name in names:
        kpi = KPI_BY_NAME.get(name)
        if kpi is None:
            raise KpiError(f"unknown KPI {name!r}; see `kpi report --list` for the catalog")
        bad = [d for d in by if d not in kpi.dimensions]
        if bad:
            raise KpiError(
                f"KPI {name!r} does not support dimension(s) {bad}; "
                f"it supports {list(kpi.dimensions)}"
            )
        if granularity is not None and not kpi.windowed:
            raise KpiError(
                f"KPI {name!r} is a snapshot at as-of and has no time buckets; "
                "drop the granularity or ask for window KPIs"
            )
        out.append(kpi)
    return out
