"""Values of every series at every step from ``StepDeltas``, window by window (the backfill's
engine, second half; see ``kpi.kpis.steps`` for the definitions)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import polars as pl

from kpi.kpis.catalog import AGE_BANDS
from kpi.kpis.steps import VALUE, D, K, StepDeltas, StepError

# --- adding the deltas up, window by window -------------------------------------------


class StepValues:
    """Values of every series at every step, produced window by window (bounded memory).

    ``window(k0, k1)`` must be called with consecutive, increasing ranges; each returns
    per-measure frames of ``labels..., _k, value`` (gauges only where the report would
    have a row: a listed facility always, others while items wait; network and
    complaint groups while they are non-empty; counters and histograms at every step
    from the start, 0 before their first event).
    """

    def __init__(self, deltas: StepDeltas) -> None:
        self._d = deltas
        self._next = 0
        self._carry: dict[str, pl.DataFrame] = {}
        self._series: dict[str, pl.DataFrame] = {}
        for name, frame in {
            **deltas.counters,
            **{f"{h}:bucket": f for h, f in deltas.histograms.items()},
            **{f"{h}:sum": f for h, f in deltas.histogram_sums.items()},
            **deltas.gauges,
        }.items():
            labels = [c for c in frame.columns if c not in (K, D)]
            series = frame.select(labels).unique().sort(labels)
            if name == "backlog":
                listed = deltas.listed.select("facility", "facility_type", "region")
                bands = pl.DataFrame({"age_band": list(AGE_BANDS)})
                series = pl.concat([series, listed.join(bands, how="cross")]).unique().sort(labels)
            self._series[name] = series
            self._carry[name] = series.with_columns(pl.lit(0, pl.Int64).alias(VALUE))

    def series(self, name: str) -> pl.DataFrame:
        """Every label set a measure has at some step (histograms: ``NAME:bucket``/``NAME:sum``)."""
        return self._series[name]

    @property
    def steps(self) -> pl.Series:
        """The step grid (epoch µs)."""
        return self._d.steps

    def windows(self, size: int) -> Iterator[tuple[int, int]]:
        """Consecutive ``(k0, k1)`` ranges of ``size`` steps covering the grid."""
        n = self._d.steps.len()
        for k0 in range(0, n, size):
            yield k0, min(n, k0 + size)

    def _cumulative(self, name: str, frame: pl.DataFrame, k0: int, k1: int) -> pl.DataFrame:
        series = self._series[name]
        labels = series.columns
        ks = pl.DataFrame({K: pl.int_range(k0, k1, eager=True).cast(pl.Int64)})
        in_window = frame.filter((pl.col(K) >= k0) & (pl.col(K) < k1))
        grid = series.join(ks, how="cross")
        carry = self._carry[name].rename({VALUE: "_carry"})
        values = (
            grid.join(in_window, on=[*labels, K], how="left", nulls_equal=True)
            .with_columns(pl.col(D).fill_null(0))
            .sort([*labels, K])
            .with_columns(pl.col(D).cum_sum().over(labels).alias(VALUE))
            .join(carry, on=labels, how="left", nulls_equal=True)
            .select(*labels, K, (pl.col(VALUE) + pl.col("_carry")).alias(VALUE))
        )
        self._carry[name] = values.filter(pl.col(K) == k1 - 1).select(*labels, VALUE)
        return values

    def window(self, k0: int, k1: int) -> dict[str, pl.DataFrame]:
        """Values at steps ``k0 <= k < k1`` of every measure (see the class docstring)."""
        if k0 != self._next or k1 <= k0:
            raise StepError(f"windows must be consecutive: expected {self._next}, got {k0}")
        self._next = k1
        d = self._d
        out: dict[str, pl.DataFrame] = {}
        for name, frame in d.counters.items():
            out[name] = self._cumulative(name, frame, k0, k1)
        for name in d.histograms:
            out[f"{name}:bucket"] = self._cumulative(f"{name}:bucket", d.histograms[name], k0, k1)
            out[f"{name}:sum"] = self._cumulative(f"{name}:sum", d.histogram_sums[name], k0, k1)
        for name in ("in_network", "overdue", "complaints_open", "complaints_overdue"):
            out[name] = self._cumulative(name, d.gauges[name], k0, k1)
        stalled = self._cumulative("stalled", d.gauges["stalled"], k0, k1)
        backlog = self._cumulative("backlog", d.gauges["backlog"], k0, k1)
        # Rows exist where the report has a group: in-network and stalled while the
        # destination has items in the network, complaints while some are open.
        network = out["in_network"]
        present = network.filter(pl.col(VALUE) > 0).select("product", "destination", K)
        out["overdue"] = out["overdue"].join(
            present, on=["product", "destination", K], how="semi", nulls_equal=True
        )
        out["in_network"] = network.filter(pl.col(VALUE) > 0)
        regions = present.select(pl.col("destination").alias("region"), K).unique()
        out["stalled"] = stalled.join(regions, on=["region", K], how="semi")
        open_ = out["complaints_open"].filter(pl.col(VALUE) > 0)
        out["complaints_overdue"] = out["complaints_overdue"].join(
            open_.select("region", K), on=["region", K], how="semi"
        )
        out["complaints_open"] = open_
        fac_present = (
            backlog.group_by("facility", K)
            .agg(pl.col(VALUE).sum().alias("_total"))
            .filter(pl.col("_total") > 0)
            .select("facility", K)
        )
        listed_ks = d.listed.select("facility").join(
            pl.DataFrame({K: pl.int_range(k0, k1, eager=True).cast(pl.Int64)}), how="cross"
        )
        fac_present = pl.concat([fac_present, listed_ks]).unique()
        out["backlog"] = backlog.join(fac_present, on=["facility", K], how="semi")
        out["backlog_oldest"] = self._oldest(
            out["backlog"].select("facility", "facility_type", "region", K).unique(), k0, k1
        )
        return out

    def _oldest(self, present: pl.DataFrame, k0: int, k1: int) -> pl.DataFrame:
        """Age (µs) of the oldest waiting item per present facility and step (0: none)."""
        ranges = self._d.oldest.filter((pl.col("_k_end") > k0) & (pl.col(K) < k1)).select(
            "facility", pl.col(K).alias("_from"), "_k_end", "since_us"
        )
        steps = pl.DataFrame(
            {K: pl.int_range(k0, k1, eager=True).cast(pl.Int64), "_t": self._d.steps[k0:k1]}
        )
        grid = present.join(steps, on=K, how="left").sort("facility", K)
        found = grid.join_asof(
            ranges.sort("facility", "_from"),
            left_on=K,
            right_on="_from",
            by="facility",
            strategy="backward",
            check_sortedness=False,  # both sides are sorted by (facility, step) above
        )
        age = pl.when(pl.col(K) < pl.col("_k_end")).then(pl.col("_t") - pl.col("since_us"))
        return found.select(
            "facility", "facility_type", "region", K, age.fill_null(0).alias(VALUE)
        ).sort("facility", K)

    def thresholds(self) -> pl.DataFrame:
        """Configured backlog thresholds of listed facilities (``facility``, ``value``)."""
        return (
            self._d.listed.filter(pl.col("backlog_threshold").is_not_null())
            .select("facility", pl.col("backlog_threshold").alias(VALUE))
            .sort("facility")
        )


def cumulative_buckets(frame: pl.DataFrame, labels: Sequence[str], buckets: int) -> pl.DataFrame:
    """Per-bucket values (bucket ``0..buckets``) made cumulative over ``le``, every bucket present."""
    keys = frame.select(*labels, K).unique()
    all_buckets = pl.DataFrame({"bucket": pl.int_range(0, buckets + 1, eager=True).cast(pl.Int64)})
    return (
        keys.join(all_buckets, how="cross")
        .join(frame, on=[*labels, K, "bucket"], how="left", nulls_equal=True)
        .with_columns(pl.col(VALUE).fill_null(0))
        .sort([*labels, K, "bucket"])
        .with_columns(pl.col(VALUE).cum_sum().over([*labels, K]))
    )
