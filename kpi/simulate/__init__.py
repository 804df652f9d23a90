"""Peak-season scenario generator: a synthetic but plausible data folder.

The engine works on whole columns: one row per item and one column per lifecycle
slot (accepted, departed, arrived, ...), all numpy, so a million items take seconds.
Every random number comes from ``Generator(PCG64(...))`` streams split off the seed
(items, complaints, feeds) and drawn in a fixed order, so the same arguments always
give byte-identical files.

Times are float64 hours since the Unix epoch (UTC) inside the engine; Asia/Shanghai
has had no daylight-saving time since 1991, so local time is exactly UTC+8.

The modules follow the run: ``config`` (arguments, local time), ``calendar``
(festival volume, timetables), ``network``, ``demand`` (products, acceptances,
deadlines, ids), ``incidents`` (scripted incidents, the slow hub's queue),
``routing``, ``events``, ``facilities``, ``complaints``, ``bad_rows`` (text feeds),
``run`` (``generate``), ``writers`` (``write_data_folder``) and ``live``.
"""

from __future__ import annotations

from kpi.simulate.bad_rows import (
    COMPLAINT_DEFECTS,
    COMPLAINT_FEEDS,
    EVENT_DEFECTS,
    EVENT_FEEDS,
    FEED_COMPLAINT_SHARE,
    FEED_ITEM_SHARE,
    WRONG_CHECK_DIGIT_ITEMS,
    Feeds,
)
from kpi.simulate.calendar import FESTIVAL_DAYS, HOLIDAYS, festival_factor
from kpi.simulate.complaints import (
    BASE_COMPLAINT_PPM,
    DELAY_ON_TIME_PPM,
    REFUSED_ACCEPTANCE_PPM,
    REPLY_DEADLINE_DAYS,
    delay_complaint_probability,
)
from kpi.simulate.config import (
    DEFAULT_DAYS,
    DEFAULT_ITEMS,
    DEFAULT_SCENARIO,
    DEFAULT_START,
    LOCAL_OFFSET_H,
    LOCAL_TZ,
    LOCAL_TZINFO,
    SCENARIOS,
    SimConfig,
)
from kpi.simulate.demand import PRODUCT_MIX, PRODUCTS, S10_PREFIX, S10_PREFIX_LIVE, item_ids
from kpi.simulate.facilities import facilities_frame
from kpi.simulate.incidents import (
    INCIDENT_FAILING_OFFICE,
    INCIDENT_ROUTE,
    INCIDENT_SLOW_HUB,
    Incidents,
    incident_schedule,
)
from kpi.simulate.live import EVENTS_PER_ITEM, LiveRun, live_append
from kpi.simulate.network import REGION_INFO, REMOTE_REGIONS, Network, build_network
from kpi.simulate.routing import FAILURE_REASONS, SLOTS
from kpi.simulate.run import Report, SimResult, generate
from kpi.simulate.writers import GENERATED_FILES, write_data_folder

__all__ = [
    "BASE_COMPLAINT_PPM",
    "COMPLAINT_DEFECTS",
    "COMPLAINT_FEEDS",
    "DEFAULT_DAYS",
    "DEFAULT_ITEMS",
    "DEFAULT_SCENARIO",
    "DEFAULT_START",
    "DELAY_ON_TIME_PPM",
    "EVENTS_PER_ITEM",
    "EVENT_DEFECTS",
    "EVENT_FEEDS",
    "FAILURE_REASONS",
    "FEED_COMPLAINT_SHARE",
    "FEED_ITEM_SHARE",
    "FESTIVAL_DAYS",
    "GENERATED_FILES",
    "HOLIDAYS",
    "INCIDENT_FAILING_OFFICE",
    "INCIDENT_ROUTE",
    "INCIDENT_SLOW_HUB",
    "LOCAL_OFFSET_H",
    "LOCAL_TZ",
    "LOCAL_TZINFO",
    "PRODUCTS",
    "PRODUCT_MIX",
    "REFUSED_ACCEPTANCE_PPM",
    "REGION_INFO",
    "REMOTE_REGIONS",
    "REPLY_DEADLINE_DAYS",
    "S10_PREFIX",
    "S10_PREFIX_LIVE",
    "SCENARIOS",
    "SLOTS",
    "WRONG_CHECK_DIGIT_ITEMS",
    "Feeds",
    "Incidents",
    "LiveRun",
    "Network",
    "Report",
    "SimConfig",
    "SimResult",
    "build_network",
    "delay_complaint_probability",
    "facilities_frame",
    "festival_factor",
    "generate",
    "incident_schedule",
    "item_ids",
    "live_append",
    "write_data_folder",
]
