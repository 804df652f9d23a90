"""facilities.csv: the network with backlog thresholds scaled to each facility's load."""

from __future__ import annotations

import numpy as np
import polars as pl

from kpi import contract
from kpi.simulate.config import F64, I64
from kpi.simulate.network import Network
from kpi.simulate.routing import (
    S_ACC,
    S_ARR1,
    S_ARR2,
    S_CO_DEP,
    S_DELIVERED,
    S_DO,
    S_RETURNED,
    Routes,
)


def peak_presence(fac: I64, enter: F64, leave: F64, n_fac: int, lo: float, n_snap: int) -> I64:
    """Most items present at once per facility, over hourly snapshots from ``lo``."""
    w = n_snap + 1
    i0 = np.clip(np.ceil(enter - lo), 0, n_snap).astype(np.int64)
    i1 = np.clip(np.ceil(np.nan_to_num(leave - lo, nan=float(n_snap))), 0, n_snap).astype(np.int64)
    i1 = np.maximum(i0, i1)
    size = n_fac * w
    diff = np.bincount(fac * w + i0, minlength=size) - np.bincount(fac * w + i1, minlength=size)
    counts = np.cumsum(diff.reshape(n_fac, w), axis=1)[:, :n_snap]
    peak: I64 = counts.max(axis=1) if n_snap > 0 else np.zeros(n_fac, dtype=np.int64)
    return peak


def nice_threshold(peak: I64) -> I64:
    """1.5 x the healthy peak, at least 10, rounded up to two significant digits."""
    raw = np.maximum(10.0, 1.5 * peak.astype(np.float64))
    scale = 10.0 ** np.maximum(0, np.floor(np.log10(raw)) - 1)
    out: I64 = (np.ceil(raw / scale) * scale).astype(np.int64)
    return out


def backlog_thresholds(net: Network, r: Routes, start_h: float, days: int) -> I64:
    """Backlog thresholds scaled to each facility's simulated healthy load."""
    t = r.times
    same = r.fac[2] < 0
    leave_do = np.where(np.isnan(t[:, S_DELIVERED]), t[:, S_RETURNED], t[:, S_DELIVERED])
    fac = np.concatenate((r.fac[0], r.fac[1], r.fac[2][~same], r.fac[3]))
    enter = np.concatenate((t[:, S_ACC], t[:, S_ARR1], t[~same, S_ARR2], t[:, S_DO]))
    # The slow hub is calibrated on its normal dwell times, not on the incident.
    leave = np.concatenate((t[:, S_CO_DEP], r.hub1_dep_base, r.hub2_dep_base[~same], leave_do))
    peak = peak_presence(fac, enter, leave, len(net.facility), start_h, days * 24)
    return nice_threshold(peak)


def facilities_frame(net: Network, thresholds: I64 | None) -> pl.DataFrame:
    """facilities.csv content: id, name, type, region, backlog threshold (null if uncalibrated)."""
    n = len(net.facility)
    thr = pl.Series(thresholds if thresholds is not None else [None] * n, dtype=pl.Int64)
    frame = pl.DataFrame(
        {
            "facility": list(net.facility),
            "name": list(net.name),
            "type": pl.Series(contract.FACILITY_TYPES).gather(pl.Series(net.ftype)),
            "region": pl.Series(contract.PROVINCES).gather(pl.Series(net.region)),
            "backlog_threshold": thr,
        }
    )
    return frame.with_columns(
        pl.when(pl.Series(net.no_threshold))
        .then(None)
        .otherwise(pl.col("backlog_threshold"))
        .alias("backlog_threshold")
    )
