"""Stage increments over integer keys: ``kpi.kpis.stage_increments`` for a caller that
holds its items as 64-bit hashes and its facilities as dictionary codes (the exporter).

The rules and the answers are ``stage_increments``' (the report's ``stage_tables``,
computed before and after the set, the difference observed, what disappeared counted as
revisions); what differs is the work per set: the items are never turned back into id
text, the facilities never into names, and the two versions of the touched items are
built in **one** ``tables_from_rows`` call (item ``r`` of the set becomes ``2r`` before
and ``2r+1`` after), then compared in one signed group-by per table. Labels are joined
on the facility code at the end, on the observations only.

The item identity is the caller's hash: two item ids sharing a hash are one item here,
as they are everywhere in the exporter's state (``exporters.compact``).
"""

from __future__ import annotations

from typing import Final

import polars as pl

from kpi.events import RANK_BITS, STAGE
from kpi.kpis.labels import UNKNOWN
from kpi.kpis.stage_build import DWELL, LEG, tables_from_rows
from kpi.kpis.stage_increments import (
    COUNT,
    FIRST_MILE_LABELS,
    SECONDS,
    STAGES,
    StageIncrements,
)

#: Coded stage rows: item hash, time key (``kpi.events.event_key``), facility code.
CODED_SCHEMA: Final[dict[str, pl.DataType]] = {
    "h": pl.UInt64(),
    "key": pl.Int64(),
    "facility": pl.UInt32(),
}

_ARR, _DEP, _DEL = STAGE["arrived"], STAGE["departed"], STAGE["delivered"]
_SCAN_KEYS: Final = ["kind", "r", "at", "facility", "from_facility", "started_at"]
_FIRST: Final = ["r", "accepted_at", "first_departed_at"]
_LAST: Final = ["r", "delivered_at", "last_arrived_at", "last_arrival_facility"]


def _key(at: str, rank: pl.Expr) -> pl.Expr:
    """The time key (``kpi.events.event_key``) of the scan at ``at`` of rank ``rank``."""
    return pl.col(at).dt.epoch("us") * RANK_BITS + rank.cast(pl.Int64)


def _repeat_new(delta: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Rows of ``delta`` with ``_d > 0``, each as many times as it is new."""
    new = delta.filter(pl.col("_d") > 0)
    if not (new.get_column("_d") > 1).any():  # a series' test: no query's fixed cost
        return new.select(keys)
    return new.select(*keys, pl.int_ranges(0, pl.col("_d")).alias("_i")).explode("_i").drop("_i")


def _gone(*where: pl.Expr) -> pl.Expr:
    """How many rows of a difference (among ``where``) the set takes away."""
    d = pl.col("_d")
    return (-d).filter(d < 0, *where).sum()


def facility_labels(names: pl.Series, facilities: pl.DataFrame) -> pl.DataFrame:
    """Per facility code (the position in ``names``): ``code``, ``facility``,
    ``facility_type``, ``region`` as the histograms label them (``facilities.csv``)."""
    fac = facilities.select(
        pl.col("facility").cast(pl.String),
        pl.col("type").cast(pl.String).alias("facility_type"),
        pl.col("region").cast(pl.String),
    ).unique("facility", keep="last")
    coded = pl.DataFrame({"facility": names.cast(pl.String)}).with_row_index("code")
    labelled = coded.join(fac, on="facility", how="left", maintain_order="left")
    return labelled.with_columns(
        pl.col(c).fill_null(UNKNOWN).replace("", UNKNOWN)
        for c in ("facility", "facility_type", "region")
    )


def _seconds(later: str, earlier: str) -> pl.Expr:
    return ((pl.col(later) - pl.col(earlier)).dt.total_microseconds() / 1_000_000.0).alias(SECONDS)


def _by_code(
    frame: pl.DataFrame, column: str, labels: pl.DataFrame, cols: dict[str, str]
) -> pl.DataFrame:
    """``frame`` with ``labels``' columns (renamed by ``cols``) of the code in ``column``
    (a column ``frame`` already has stays, as a join's left one would).

    ``labels``' row ``i`` is code ``i`` (``facility_labels``): a gather, not a join."""
    codes = frame.get_column(column).to_physical().cast(pl.UInt32)
    return frame.with_columns(
        labels.get_column(a).gather(codes).alias(b)
        for a, b in cols.items()
        if b not in frame.columns
    )


def _unknown(*names: str) -> list[pl.Expr]:
    return [pl.col(n).cast(pl.String).fill_null(UNKNOWN).replace("", UNKNOWN) for n in names]


def _observations(
    scans: pl.DataFrame,
    first: pl.DataFrame,
    last: pl.DataFrame,
    labels: pl.DataFrame,
    dims: pl.DataFrame,
) -> dict[str, pl.DataFrame]:
    """New intervals as histogram observations (labels plus ``seconds``)."""
    timed = scans.filter(pl.col("started_at").is_not_null())
    place = {"facility": "facility", "facility_type": "facility_type", "region": "region"}
    dwell = _by_code(timed.filter(pl.col("kind") == DWELL), "facility", labels, place).select(
        *place, _seconds("at", "started_at")
    )
    leg = _by_code(
        timed.filter(pl.col("kind") == LEG), "from_facility", labels, {"region": "from_region"}
    )
    leg = _by_code(leg, "facility", labels, {"region": "to_region"}).select(
        *_unknown("from_region", "to_region"), _seconds("at", "started_at")
    )
    first_mile = first.join(dims, on="h", how="left").select(
        *_unknown(*FIRST_MILE_LABELS), _seconds("first_departed_at", "accepted_at")
    )
    last_mile = _by_code(last, "last_arrival_facility", labels, place).select(
        *place, _seconds("delivered_at", "last_arrived_at")
    )
    return {"dwell": dwell, "leg": leg, "first_mile": first_mile, "last_mile": last_mile}


def _per_item(rows: pl.DataFrame, value: pl.Expr, items: int) -> pl.Series:
    """``value`` aggregated per item of ``rows``, at row ``r`` of a series of ``items``
    (null for an item without rows): items are numbered densely, so a gather by ``r``
    reads it back where a join would build a table."""
    agg = rows.group_by("r").agg(value.alias("_v"))
    none = pl.repeat(None, items, dtype=pl.Int64, eager=True)
    return none.scatter(agg.get_column("r"), agg.get_column("_v"))


def _compared(
    old: pl.DataFrame, new: pl.DataFrame, enum: pl.Enum, count: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Per-scan, first-mile and last-mile rows that the set adds (``_d > 0``) or takes
    away (``_d < 0``), items numbered ``r`` (``old``, ``new``: their rows before the set
    and the set's; ``count``: how many items, numbered from 0)."""

    def version(rows: pl.LazyFrame, odd: int) -> pl.LazyFrame:
        return rows.select(
            (pl.col("r") * 2 + odd).alias("h"), "key", pl.col("facility").cat.to(enum)
        )

    # An item whose new scans all come after its stored ones (the common case) cannot
    # change an interval already counted: it is built once, with its new scans, and what
    # ends at a new scan is new. The others are built before and after and compared.
    newest = _per_item(old, pl.col("key").max(), count)
    fast = newest.is_null() | (_per_item(new, pl.col("key").min(), count) > newest)
    # Per item: its newest stored key when it is fast (-2**62 when it has none), else null.
    olds = pl.select(pl.when(fast).then(newest.fill_null(-(2**62)))).to_series()
    slow = ~fast.fill_null(False).gather(old.get_column("r"))
    rows = pl.concat(
        [version(old.lazy().filter(slow), 0), version(old.lazy(), 1), version(new.lazy(), 1)]
    )
    tables = tables_from_rows(rows.collect())
    if tables is None:  # no second hash is given: the dense numbers never collide
        raise AssertionError("stage rows without h2 always build")

    def diff(frame: pl.DataFrame, keys: list[str], end: pl.Expr) -> pl.DataFrame:
        """The signed difference of the slow items (``h`` odd = after), and the rows of
        the fast ones that end at a new scan (``end``: the closing scan's time key), each
        once: one query."""
        r = frame.get_column("h") // 2
        rows = frame.lazy().with_columns(
            r.alias("r"), end.alias("_end"), olds.gather(r).alias("_old")
        )
        fast = pl.col("_old").is_not_null()
        compared = (
            rows.filter(~fast)
            .group_by(keys)
            .agg(((pl.col("h") % 2).cast(pl.Int64) * 2 - 1).sum().alias("_d"))
            .filter(pl.col("_d") != 0)
        )
        built = rows.filter(fast & (pl.col("_end") > pl.col("_old"))).select(
            *keys, pl.lit(1, pl.Int64).alias("_d")
        )
        return pl.concat([compared, built]).collect(engine="in-memory")

    scan_end = _key("at", pl.when(pl.col("kind") == DWELL).then(_DEP).otherwise(_ARR))
    scans_d = diff(tables.scans, _SCAN_KEYS, scan_end)
    items = tables.items
    first_d = diff(
        items.filter(
            pl.col("accepted_at").is_not_null() & pl.col("first_departed_at").is_not_null()
        ),
        _FIRST,
        _key("first_departed_at", pl.lit(_DEP)),
    )
    last_d = diff(
        items.filter(
            pl.col("delivered_at").is_not_null() & pl.col("last_arrived_at").is_not_null()
        ),
        _LAST,
        _key("delivered_at", pl.lit(_DEL)),
    )
    return scans_d, first_d, last_d


def coded_stage_increments(
    before: pl.DataFrame,
    new_rows: pl.DataFrame,
    names: pl.Series,
    facilities: pl.DataFrame,
    dims: pl.DataFrame,
) -> StageIncrements:
    """What a set's stage scans add to the histograms (``stage_increments``' answers).

    ``before``: ``CODED_SCHEMA`` rows of the touched items before the set (rows of other
    items are ignored); ``new_rows``: the set's; ``names``: facility name per code;
    ``facilities``: ``facilities.csv`` (labels); ``dims``: ``h, product, origin``.
    """
    if new_rows.is_empty():
        return _empty()
    ids = (
        new_rows.select(pl.col("h").unique())
        .with_row_index("r")
        .with_columns(pl.col("r").cast(pl.UInt64))
    )
    scans_d, first_d, last_d = _compared(
        before.select(CODED_SCHEMA.keys()).join(ids, on="h", how="inner"),
        new_rows.select(CODED_SCHEMA.keys()).join(ids, on="h", how="inner"),
        pl.Enum(names.cast(pl.String).to_list()),
        ids.height,
    )
    timed = pl.col("started_at").is_not_null()
    kind = pl.col("kind")
    dwell, leg = scans_d.select(
        _gone(timed, kind == DWELL).alias("dwell"), _gone(timed, kind == LEG).alias("leg")
    ).row(0)
    gone = (dwell, leg, first_d.select(_gone()).item(), last_d.select(_gone()).item())
    first = _repeat_new(first_d, _FIRST)
    # Only the items whose first mile is new read their labels: their hashes (``ids``'
    # row ``r`` is item ``r``) pick their rows of ``dims``, not a join of all the set's.
    hashes = ids.get_column("h").gather(first.get_column("r"))
    item_dims = dims.filter(pl.col("h").is_in(hashes.implode())).select("h", *FIRST_MILE_LABELS)
    obs = _observations(
        _repeat_new(scans_d, _SCAN_KEYS),
        first.with_columns(hashes),
        _repeat_new(last_d, _LAST),
        facility_labels(names, facilities),
        item_dims,
    )
    revisions = pl.DataFrame(
        {"stage": list(STAGES), COUNT: [int(g or 0) for g in gone]},
        schema={"stage": pl.String(), COUNT: pl.Int64()},
    ).filter(pl.col(COUNT) > 0)
    return StageIncrements(revisions=revisions, **obs)


def _empty() -> StageIncrements:
    def obs(labels: tuple[str, ...]) -> pl.DataFrame:
        return pl.DataFrame(schema={**dict.fromkeys(labels, pl.String()), SECONDS: pl.Float64()})

    return StageIncrements(
        dwell=obs(("facility", "facility_type", "region")),
        leg=obs(("from_region", "to_region")),
        first_mile=obs(FIRST_MILE_LABELS),
        last_mile=obs(("facility", "facility_type", "region")),
        revisions=pl.DataFrame(schema={"stage": pl.String(), COUNT: pl.Int64()}),
    )
