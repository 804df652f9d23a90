"""Events: one row per visible scan of a route."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from kpi import contract
from kpi.simulate.columns import gather, promise_series
from kpi.simulate.config import BOOL, F64
from kpi.simulate.demand import PRODUCTS
from kpi.simulate.network import Network
from kpi.simulate.routing import (
    FAILURE_REASONS,
    S_ACC,
    S_FAIL,
    SLOT_EVENT,
    SLOT_ROLE,
    SLOTS,
    Routes,
)


def visible_slots(r: Routes, end_h: float) -> BOOL:
    """Slots that were scanned before the end of the data (stuck items stop at their cut)."""
    slot = np.arange(len(SLOTS))
    out: BOOL = ~np.isnan(r.times) & (slot[None, :] <= r.cut[:, None]) & (r.times < end_h)
    return out


def events_frame(
    r: Routes,
    ids: pl.Series,
    promise: F64,
    explicit: BOOL,
    net: Network,
    start_h: float,
    end_h: float,
) -> pl.DataFrame:
    """One row per visible scan, sorted by time (then item, then lifecycle slot)."""
    ii, ss = np.nonzero(visible_slots(r, end_h))
    ii = ii.astype(np.int64)
    ss = ss.astype(np.int64)
    sec = np.round(r.times[ii, ss] * 3600.0).astype(np.int64)
    # One int64 key (seconds since start | item | slot) sorts 7 M rows in well under a second.
    key = ((sec - math.floor(start_h * 3600.0)) << 28) | (ii << 4) | ss
    order = np.argsort(key)
    ii, ss, sec = ii[order], ss[order], sec[order]
    item = ids.gather(pl.Series(ii))
    is_acc = ss == S_ACC
    attempt = np.where(np.isin(ss, S_FAIL), (ss - S_FAIL[0]) // 2, 0)
    reason = np.where(np.isin(ss, S_FAIL), r.reasons[ii, attempt], -1)
    promised = np.where(is_acc & explicit[ii], promise[ii], np.nan)
    slot_tag = tuple(f"{s:02d}" for s in range(len(SLOTS)))
    return pl.DataFrame(
        {
            "event_id": pl.DataFrame({"i": item, "s": gather(slot_tag, ss)})
            .select(pl.concat_str(pl.col("i"), pl.lit("-"), pl.col("s")))
            .to_series(),
            "item_id": item,
            "event": gather(contract.EVENT_TYPES, SLOT_EVENT[ss]),
            "ts": pl.Series(sec * 1_000_000).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            "facility": gather(net.facility, r.fac[SLOT_ROLE[ss], ii]),
            "product": gather(PRODUCTS, np.where(is_acc, r.product[ii], -1)),
            "origin": gather(contract.PROVINCES, np.where(is_acc, r.origin[ii], -1)),
            "destination": gather(contract.PROVINCES, np.where(is_acc, r.dest[ii], -1)),
            "promised_by": promise_series("promised_by", promised),
            "reason": gather(FAILURE_REASONS, reason),
        }
    )
