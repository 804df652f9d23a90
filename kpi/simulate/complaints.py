"""Outcomes per item and the complaints they draw."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from kpi import contract
from kpi.simulate.columns import gather, utc_series
from kpi.simulate.config import F64, I64, lognormal
from kpi.simulate.demand import PRODUCT_MIX, PRODUCTS
from kpi.simulate.events import visible_slots
from kpi.simulate.network import REGION_INFO
from kpi.simulate.routing import S_ACC, S_DELIVERED, S_FAIL, S_RETURNED, Routes


@dataclass(frozen=True)
class Outcome:
    """How each item ended by the end of the data (the complaints' cause)."""

    delivered: F64  # NaN when not delivered by the end of the data
    returned: F64
    last_seen: F64
    #: Hours past the end of the due day (delivered, or still open at the end; NaN if
    #: returned); late when >= 0.
    late_h: F64
    failed_attempts: I64
    first_failure: F64


def item_outcomes(r: Routes, promise: F64, end_h: float) -> Outcome:
    """Delivery, return, last scan and lateness of each item as seen at the end of the data."""
    vis = visible_slots(r, end_h)
    t = np.where(vis, r.times, np.nan)
    delivered = t[:, S_DELIVERED]
    returned = t[:, S_RETURNED]
    # Every item has a visible acceptance, so the row maximum is never all-NaN.
    last_seen = np.nanmax(t, axis=1)
    late_h = np.where(
        ~np.isnan(delivered),
        delivered - promise,
        np.where(np.isnan(returned), end_h - promise, np.nan),
    )
    fails = t[:, list(S_FAIL)]
    return Outcome(
        delivered=delivered,
        returned=returned,
        last_seen=last_seen,
        late_h=late_h,
        failed_attempts=(~np.isnan(fails)).sum(axis=1).astype(np.int64),
        first_failure=fails[:, 0],
    )


#: Complaints per million items unrelated to lateness (one draw per item).
BASE_COMPLAINT_PPM: Final[dict[str, float]] = {
    "damage": 80.0,
    "misdelivery": 50.0,
    "staff_conduct": 40.0,
    "other": 50.0,
    "loss": 10.0,
}
#: Delay complaints per million on-time items ("where is my parcel?" before the promise).
DELAY_ON_TIME_PPM: Final = 50.0
#: Counter refusals per million items; these complaints carry no item id.
REFUSED_ACCEPTANCE_PPM: Final = 20.0
#: Reply deadline the complaint KPIs measure against (for documentation and tests).
REPLY_DEADLINE_DAYS: Final = 7
_CAT = {c: i for i, c in enumerate(contract.COMPLAINT_CATEGORIES)}


def delay_complaint_probability(late_days: F64) -> F64:
    """Chance a late item draws a delay complaint: 3% plus 2% per day late, at most 30%."""
    out: F64 = np.minimum(0.3, 0.03 + 0.02 * late_days)
    return out


@dataclass(frozen=True)
class _Candidates:
    """Complaints before the cut at the end of the data, one entry per complaint."""

    item: I64  # -1: no item (refused at the counter)
    cat: I64
    opened: F64
    region: I64
    product: I64

    def select(self, index: npt.NDArray[np.bool_] | I64) -> _Candidates:
        """The complaints at ``index`` (a mask or an order)."""
        return _Candidates(
            self.item[index],
            self.cat[index],
            self.opened[index],
            self.region[index],
            self.product[index],
        )


def _item_complaints(
    rng: np.random.Generator, r: Routes, promise: F64, out: Outcome, end_h: float
) -> tuple[list[I64], list[I64], list[F64]]:
    """Per kind (delay, base rate, failed attempt, loss): items, categories, opening times."""
    n = len(promise)
    acc = r.times[:, S_ACC]
    u = rng.random((n, 4))
    lag = rng.random((n, 4))
    pick = rng.random(n)
    late = np.nan_to_num(out.late_h, nan=-1.0) >= 0
    late_days = np.clip(np.nan_to_num(out.late_h) / 24.0, 0.0, None)

    p_delay = np.where(late, delay_complaint_probability(late_days), DELAY_ON_TIME_PPM * 1e-6)
    hit_delay = u[:, 0] < p_delay
    open_delay = np.where(late, promise + 6.0 + 66.0 * lag[:, 0], acc + 24.0 + 48.0 * lag[:, 0])

    base_names = tuple(BASE_COMPLAINT_PPM)
    base_p = np.array([BASE_COMPLAINT_PPM[c] for c in base_names]) * 1e-6
    hit_base = u[:, 1] < base_p.sum()
    base_cat = np.array([_CAT[c] for c in base_names])[
        np.minimum(np.searchsorted(np.cumsum(base_p), u[:, 1], side="right"), len(base_names) - 1)
    ]
    ref = np.where(np.isnan(out.delivered), out.last_seen, out.delivered)
    open_base = ref + 2.0 + 94.0 * lag[:, 1]

    # Failed attempts annoy addressees: "nobody rang", "left at the wrong door".
    hit_fail = (out.failed_attempts > 0) & (u[:, 2] < 0.003)
    fail_cat = np.where(pick < 0.6, _CAT["misdelivery"], _CAT["staff_conduct"])
    open_fail = out.first_failure + 2.0 + 46.0 * lag[:, 2]

    # Customers report a loss once the promise has passed without news.
    hit_loss = _lost(out, end_h) & late & (u[:, 3] < 0.15)
    open_loss = out.last_seen + 72.0 + 96.0 * lag[:, 3]

    idx = np.arange(n, dtype=np.int64)
    hits = (hit_delay, hit_base, hit_fail, hit_loss)
    cats = (
        np.full(int(hit_delay.sum()), _CAT["delay"]),
        base_cat[hit_base],
        fail_cat[hit_fail],
        np.full(int(hit_loss.sum()), _CAT["loss"]),
    )
    opened = (open_delay[hit_delay], open_base[hit_base], open_fail[hit_fail], open_loss[hit_loss])
    return [idx[h] for h in hits], list(cats), list(opened)


def _lost(out: Outcome, end_h: float) -> npt.NDArray[np.bool_]:
    """Items neither delivered nor returned and not seen for three days before the end."""
    lost: npt.NDArray[np.bool_] = (
        np.isnan(out.delivered) & np.isnan(out.returned) & (out.last_seen < end_h - 72.0)
    )
    return lost


def _candidates(
    rng: np.random.Generator,
    r: Routes,
    promise: F64,
    out: Outcome,
    start_h: float,
    end_h: float,
) -> _Candidates:
    """Every complaint opened before the end of the data, in (opened, item, category) order."""
    n = len(promise)
    items, cats, opened = _item_complaints(rng, r, promise, out, end_h)
    m = int(rng.poisson(n * REFUSED_ACCEPTANCE_PPM * 1e-6))
    weights = np.array([REGION_INFO[c][4] for c in contract.PROVINCES])
    ra_open = start_h + rng.random(m) * (end_h - start_h)
    ra_region = rng.choice(len(weights), size=m, p=weights / weights.sum())
    ra_product = rng.choice(3, size=m, p=PRODUCT_MIX)

    item = np.concatenate((*items, np.full(m, -1)))
    known = item[item >= 0]
    c = _Candidates(
        item=item,
        cat=np.concatenate((*cats, np.full(m, _CAT["refused_acceptance"]))).astype(np.int64),
        opened=np.round(np.concatenate((*opened, ra_open)) * 3600.0) / 3600.0,
        region=np.concatenate((r.dest[known], ra_region)).astype(np.int64),
        product=np.concatenate((r.product[known], ra_product)).astype(np.int64),
    )
    c = c.select(c.opened < end_h)
    return c.select(np.lexsort((c.cat, c.item, c.opened)))


def complaint_records(
    rng: np.random.Generator,
    r: Routes,
    ids: pl.Series,
    promise: F64,
    out: Outcome,
    start_h: float,
    end_h: float,
) -> pl.DataFrame:
    """Complaint records (all versions), driven by each item's outcome."""
    c = _candidates(rng, r, promise, out, start_h, end_h)
    k = len(c.item)
    # Validity after investigation: late-delay complaints are mostly upheld, others less so.
    late = np.nan_to_num(out.late_h, nan=-1.0) >= 0
    item_late = np.where(c.item >= 0, late[np.maximum(c.item, 0)], False)
    item_lost = np.where(c.item >= 0, _lost(out, end_h)[np.maximum(c.item, 0)], False)
    p_valid = np.select(
        [c.cat == _CAT["delay"], c.cat == _CAT["loss"]],
        [np.where(item_late, 0.9, 0.15), np.where(item_lost, 0.95, 0.3)],
        0.6,
    )
    valid = rng.random(k) < p_valid
    reply_h = lognormal(rng, 60.0, 0.7, k)
    resolved = np.round((c.opened + reply_h) * 3600.0) / 3600.0
    is_resolved = resolved < end_h
    two_versions = is_resolved & (rng.random(k) < 0.25)
    assessed = is_resolved | (c.opened < end_h - 24.0)

    cid = "CMP" + pl.Series(np.arange(1, k + 1, dtype=np.int64)).cast(pl.String).str.zfill(7)
    final = pl.DataFrame(
        {
            "complaint_id": cid,
            "opened_at": utc_series("opened_at", c.opened),
            "category": gather(contract.COMPLAINT_CATEGORIES, c.cat),
            "item_id": gather(ids, c.item),
            "region": gather(contract.PROVINCES, c.region),
            "product": gather(PRODUCTS, c.product),
            "valid": pl.Series(valid)
            .to_frame()
            .select(pl.when(pl.Series(assessed)).then(pl.first()))
            .to_series(),
            "resolved_at": utc_series("resolved_at", np.where(is_resolved, resolved, np.nan)),
            "updated_at": utc_series("updated_at", np.where(is_resolved, resolved, c.opened)),
        }
    )
    # Resolved complaints sometimes arrive twice: first as opened, then with the reply.
    first = final.filter(pl.Series(two_versions)).with_columns(
        pl.lit(None, dtype=pl.Boolean).alias("valid"),
        pl.lit(None, dtype=contract.UTC).alias("resolved_at"),
        pl.col("opened_at").alias("updated_at"),
    )
    return pl.concat([first, final]).sort(["updated_at", "complaint_id"])
