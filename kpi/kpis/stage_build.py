"""Building the stage tables (``kpi.kpis.stages``) from validated events, in pure polars.

The stage scans are sorted by item, then time (one stable sort by item when the log
already lists each item's scans in time order). An item's arrivals and departures mostly
alternate (departed C1, arrived PC1, departed PC1, ...): a departure's dwell then starts
at the previous arrival or departure of its item, an arrival at its facility, and an
arrival's leg at the previous one, a departure from another facility. One shift answers
those rows; the rows whose previous row is neither (a repeated scan, a stray arrival,
ties) are settled by a join restricted to their own items, and an item's first row has
no stage before it. First and last mile: the first acceptance and delivery, first
departure and last arrival of each item are first rows of filters of the sorted frame,
joined on the sorted item hash; the rare items whose first departure came before the
acceptance, or last arrival after the delivery, look again among their own scans.
The rows may also come from ``kpi.state_scan``'s pass (``tables_from_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl

from kpi.contract import UTC
from kpi.events import RANK_BITS, STAGE, event_in, key_ts, stage
from kpi.kpis.exprs import hours_between
from kpi.state_scan import ITEM_SEEDS, STAGE_SCANS, StageRows

#: The scans a stage is made of (no effect of the rules table describes them: a stage
#: starts and ends at physical hand-overs, whatever the event counts for).
STAGE_EVENTS: Final = STAGE_SCANS
# The item-id hashes of ``kpi.state_scan``: its pass can hand over the stage rows.
_SEED, _SEED_2 = ITEM_SEEDS
#: Seed of ``h``, the hash of the item id (when ``StageTables.ids`` is None).
ITEM_HASH_SEED: Final = _SEED

#: Kinds of the per-scan stage rows.
DWELL: Final = "dwell"
LEG: Final = "leg"
StageKind: Final = pl.Enum([DWELL, LEG])

_ARR, _DEP, _ACC, _DEL = (STAGE[e] for e in ("arrived", "departed", "accepted", "delivered"))


@dataclass(frozen=True)
class StageTables:
    """The stage rows of one snapshot.

    ``scans``: one row per departure (dwell; ``hours`` null when it had no arrival) and
    per leg: ``kind, h, at, facility, from_facility, started_at, hours``, where ``at`` is
    the departure (dwell) or the arrival (leg), ``facility`` the departure's (dwell) or
    the arrival's (leg) and ``from_facility`` the leg's departure facility (facilities
    as ``Categorical``: integers to group and compare).
    ``items``: one row per item with an acceptance or a delivery: ``h, accepted_at,
    first_departed_at, delivered_at, last_arrived_at, last_arrival_facility`` (plus the
    item's ``product, origin, destination, dispatch_by`` after ``item_stage_rows``).
    ``h`` identifies the item: ``ids`` maps it to the item id (None until
    ``item_stage_rows`` when ``h`` is the hash of the id).
    """

    scans: pl.DataFrame
    items: pl.DataFrame
    ids: pl.DataFrame | None = None


def empty_stage_tables() -> StageTables:
    """Stage tables with no rows."""
    scans = pl.DataFrame(
        schema={
            "kind": StageKind,
            "h": pl.UInt64(),
            "at": UTC,
            "facility": pl.Categorical(),
            "from_facility": pl.Categorical(),
            "started_at": UTC,
            "hours": pl.Float64(),
        }
    )
    items = pl.DataFrame(
        schema={
            "h": pl.UInt64(),
            "accepted_at": UTC,
            "first_departed_at": UTC,
            "delivered_at": UTC,
            "last_arrived_at": UTC,
            "last_arrival_facility": pl.Categorical(),
        }
    )
    ids = pl.DataFrame(schema={"h": pl.UInt64(), "item_id": pl.String()})
    return StageTables(scans, items, ids)


def _stage_rows(events: pl.LazyFrame) -> pl.LazyFrame:
    rank = stage()  # the rules table's rank, packed below the timestamp as everywhere
    return (
        events.filter(
            event_in(STAGE_EVENTS, "event")
            & pl.col("item_id").is_not_null()
            & pl.col("ts").is_not_null()
            & pl.col("facility").is_not_null()
        )
        .with_columns(rank.alias("_rank"))
        .with_columns(  # the rank looked up once per row
            (pl.col("ts").dt.epoch("us") * RANK_BITS + pl.col("_rank")).alias("key")
        )
    )


def _base(events: pl.LazyFrame) -> pl.DataFrame:
    """The stage scans (acceptances, arrivals, departures, deliveries), unsorted: item
    hashes, time key (the event's rank below the time) and facility; the ids' text is
    never kept."""
    return (
        _stage_rows(events)
        .select(
            pl.col("item_id").hash(_SEED).alias("h"),
            pl.col("item_id").hash(_SEED_2).alias("h2"),
            "key",
            pl.col("facility").cast(pl.Categorical),
        )
        .collect()
    )


def _ts(key: str | pl.Expr) -> pl.Expr:
    return key_ts(key)


def _after(col: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(rows 1.., rows ..n-1) of ``col``: zero-copy slices, so that comparing a row with
    the one before it allocates only the answer's bits (a shifted copy of a 6 M-row
    column costs fresh pages, most of its time)."""
    return col.slice(1), col.slice(0, max(len(col) - 1, 0))


def _by_item(frame: pl.DataFrame, row_bits: int | None = None) -> pl.DataFrame:
    """``frame`` sorted stably by ``h``.

    A stable sort by a 64-bit column is an arg-sort of (value, row) pairs; sorting the
    values of one 64-bit integer made of the top bits of ``h`` and the row number below
    them (``row_bits``: as many as the row numbers need) then gathering the rows costs
    ~20 % less at 6 M rows. Two items sharing those top bits (rare) get their rows
    interleaved: only their rows are sorted again, by ``h``, in their own places."""
    n = frame.height
    frame = frame.rechunk()  # gathers from one chunk cost a fifth of those from many
    low = 2 ** (row_bits or max(n - 1, 1).bit_length())
    row = pl.int_range(n, dtype=pl.UInt64)
    packed = frame.select((pl.col("h") // low * low + row).alias("v")).to_series().sort()
    s = frame.select(pl.all().gather((packed % low).cast(pl.UInt32)))
    h, h0 = _after(s["h"])
    if (h < h0).any():
        top, top0 = _after(s["h"] // low)
        shared = top.filter((h != h0) & (top == top0)).unique()
        mask = (s["h"] // low).is_in(shared.implode())
        at, rows = mask.arg_true(), s.filter(mask).sort("h", maintain_order=True)
        s = s.with_columns(s[c].scatter(at, rows[c]) for c in s.columns)
    return s


def _sorted(base: pl.DataFrame) -> pl.DataFrame:
    """The scans sorted by item, then time, lifecycle stage and facility name, with the
    event's rank ``ev``.

    Items are ordered by a 64-bit hash ``h`` of their id. A log that lists each item's
    scans in time order (one file a day, each in time order) is in that order after one
    stable sort by item, which the check below proves; else it is sorted by time first
    (a single-column sort, then the stable one, cost ~0.6x one multi-column sort).
    Within an item, ties at one instant follow the lifecycle order and then the facility
    name, which takes a full sort only when two scans of an item share an instant and a
    stage (rows equal in all three are equal in every column). Rows without a facility
    (acceptances and deliveries as the pass keeps them) are sorted by item and time.
    """
    s = _by_item(base)
    (h, h0), (key, key0) = _after(s["h"]), _after(s["key"])
    if ((h == h0) & (key < key0)).any():
        s = _by_item(base.sort("key"))
        (h, h0), (key, key0) = _after(s["h"]), _after(s["key"])
    if "facility" in s.columns:
        fac, fac0 = _after(s["facility"])
        if ((h == h0) & (key == key0) & (fac != fac0)).any():
            s = s.sort(["h", "key", pl.col("facility").cast(pl.String)])
    ev = (pl.col("key") % RANK_BITS).cast(pl.UInt8)
    return s.with_columns(ev.alias("ev"), pl.col("h").set_sorted())


def _settle(a: pl.DataFrame, rows: pl.DataFrame, candidate_ev: int, same: bool) -> pl.DataFrame:
    """For the scans ``rows`` (columns h, i, key, facility): the latest earlier scan of
    the same item of kind ``candidate_ev`` at the same facility (``same``) or at another
    one, as ``c_key`` and ``c_fac`` (null when there is none)."""
    cands = a.filter((pl.col("ev") == candidate_ev) & pl.col("h").is_in(rows["h"].implode()))
    cands = cands.select("h", pl.col("i").alias("c_i"))
    fac_ok = pl.col("c_fac") == pl.col("facility")
    where = a.select(
        pl.col("i").alias("c_i"), pl.col("key").alias("c_key"), pl.col("facility").alias("c_fac")
    )
    best = (
        rows.join(cands, on="h", how="inner")
        .join(where, on="c_i", how="left")
        .filter((pl.col("c_i") < pl.col("i")) & (fac_ok if same else ~fac_ok))
        .group_by("i")
        .agg(pl.col("c_i").max())
        .join(where, on="c_i", how="left")
    )
    return rows.join(best, on="i", how="left")


def _scan_rows(s: pl.DataFrame) -> pl.DataFrame:
    """Dwell rows (every departure) and leg rows (arrivals after a departure elsewhere)
    of the sorted arrivals and departures ``s``.

    Each row is set beside the one before it as zero-copy slices (rows 1.. and rows
    ..n-1: a shifted copy of a 6 M-row column costs fresh pages, most of its time), and
    the rows are picked by masks straight into their final columns: no wide intermediate
    frame is built. Row 0 (the first row of its item) is added apart."""
    fac_type = s.schema["facility"]
    cols = ("h", "key", "facility")
    rest = s.slice(1).with_columns(
        s.get_column("key").slice(0, max(s.height - 1, 0)).alias("p_key"),
        s.get_column("ev").slice(0, max(s.height - 1, 0)).alias("p_ev"),
        s.get_column("facility").slice(0, max(s.height - 1, 0)).alias("p_fac"),
        s.get_column("h").slice(0, max(s.height - 1, 0)).alias("p_h"),
    )
    h, ev, fac, key = pl.col("h"), pl.col("ev"), pl.col("facility"), pl.col("key")
    p_ev, p_fac = pl.col("p_ev"), pl.col("p_fac")
    is_dep = ev == _DEP
    # The previous row starts the stage: an arrival there (dwell), a departure from
    # elsewhere (leg). It is then the latest such scan at or before this one.
    starts = (is_dep & (p_ev == _ARR) & (p_fac == fac)) | (
        ~is_dep & (p_ev == _DEP) & (p_fac != fac)
    )
    prev = h == pl.col("p_h")
    flags = rest.select(is_dep.alias("dep"), prev.alias("prev"), (prev & starts).alias("easy"))
    dep, prev_s, easy = flags["dep"], flags["prev"], flags["easy"]

    def pick(
        mask: pl.Series, kind: str, from_fac: pl.Expr | None, from_key: pl.Expr
    ) -> pl.DataFrame:
        m = pl.lit(mask)
        return rest.select(
            pl.lit(kind, StageKind).alias("kind"),
            h.filter(m),
            _ts(key.filter(m)).alias("at"),
            fac.filter(m),
            (pl.lit(None, fac_type) if from_fac is None else from_fac.filter(m)).alias(
                "from_facility"
            ),
            _ts(from_key.filter(m)).alias("started_at"),
        )

    dwell = [pick(dep & (easy | ~prev_s), DWELL, None, pl.when(pl.lit(easy)).then("p_key"))]
    legs = [pick(~dep & easy, LEG, p_fac, pl.col("p_key"))]
    if s.height and s.item(0, "ev") == _DEP:  # row 0: a departure with no arrival before
        first = s.head(1).select(*cols, pl.lit(None, pl.Int64).alias("c_key"))
        dwell.insert(0, _rare_rows(first, DWELL, pl.lit(None, fac_type)))
    rare_mask = prev_s & ~easy
    if rare_mask.any():
        a = s.with_row_index("i")
        rare = a.slice(1).filter(pl.lit(rare_mask))
        deps = _settle(a, rare.filter(is_dep).select("i", *cols), _ARR, same=True)
        dwell.append(_rare_rows(deps, DWELL, pl.lit(None, fac_type)))
        arrs = _settle(a, rare.filter(~is_dep).select("i", *cols), _DEP, same=False)
        legs.append(_rare_rows(arrs.filter(pl.col("c_key").is_not_null()), LEG, pl.col("c_fac")))
    scans = pl.concat([*dwell, *legs])
    return scans.with_columns(hours_between("at", "started_at").alias("hours"))


def _rare_rows(settled: pl.DataFrame, kind: str, from_fac: pl.Expr) -> pl.DataFrame:
    """Stage rows of ``_settle``'s answer (the stage starts at the scan it found)."""
    return settled.select(
        pl.lit(kind, StageKind).alias("kind"),
        "h",
        _ts("key").alias("at"),
        "facility",
        from_fac.alias("from_facility"),
        _ts("c_key").alias("started_at"),
    )


def _first_rows(last: bool = False) -> pl.Expr:
    """Whether a row of a frame sorted by ``h`` is its item's first (or last) one."""
    h = pl.col("h")
    return (h != h.shift(-1 if last else 1)).fill_null(True)


def _firsts(ends: pl.DataFrame) -> pl.DataFrame:
    """Per item of the sorted acceptances and deliveries ``ends``: the key of its first
    of each (``h, accepted_key, delivered_key``), sorted by ``h``."""
    ev, key = pl.col("ev"), pl.col("key")
    j = ends.select(pl.col("h").filter(_first_rows()))  # only the columns read are copied
    for kind, name in ((_ACC, "accepted_key"), (_DEL, "delivered_key")):
        rows = ends.select(pl.col("h").filter(ev == kind), key.filter(ev == kind).alias(name))
        j = j.join(rows.filter(_first_rows()), on="h", how="left")
    return j


def _item_rows(firsts: pl.DataFrame, moves: pl.DataFrame) -> pl.DataFrame:
    """Per item with an acceptance or a delivery: the first departure after the (first)
    acceptance and the delivery's (first ``delivered``) latest arrival before it.

    ``firsts`` (``_firsts``' columns) and ``moves`` (arrivals and departures, sorted like
    ``_sorted``'s) are sorted by ``h``, as is every filter of them joined here: the joins
    merge."""
    ev, key = pl.col("ev"), pl.col("key")
    j = firsts.select(
        "h", pl.col("accepted_key").alias("acc_key"), pl.col("delivered_key").alias("del_key")
    )
    # Only the columns used below are copied (fewer fresh pages).
    deps = moves.select(pl.col("h", "key").filter(ev == _DEP))
    arrs = moves.select(pl.col("h", "key", "facility").filter(ev == _ARR))
    first_dep = deps.filter(_first_rows()).select("h", key.alias("dep_key"))
    last_arr = arrs.filter(_first_rows(last=True)).select(
        "h", key.alias("arr_key"), pl.col("facility").alias("arr_fac")
    )
    j = j.join(first_dep, on="h", how="left").join(last_arr, on="h", how="left")
    acc, dep = pl.col("acc_key"), pl.col("dep_key")
    dlv, arr = pl.col("del_key"), pl.col("arr_key")
    early = j.filter(dep < acc).select("h", "acc_key")  # departed before the acceptance
    if early.height:
        again = deps.join(early, on="h").filter(key > acc)
        again = again.group_by("h").agg(key.min().alias("dep_again"))
        j = j.join(again, on="h", how="left")
    late = j.filter(arr > dlv).select("h", "del_key")  # arrived again after the delivery
    if late.height:
        again = arrs.join(late, on="h", maintain_order="left").filter(key < dlv)
        again = again.group_by("h", maintain_order=True).agg(
            key.last().alias("arr_again"), pl.col("facility").last().alias("fac_again")
        )
        j = j.join(again, on="h", how="left")
    fac_type = moves.schema["facility"]
    dep_again = pl.col("dep_again") if early.height else pl.lit(None, pl.Int64)
    arr_again = pl.col("arr_again") if late.height else pl.lit(None, pl.Int64)
    fac_again = pl.col("fac_again") if late.height else pl.lit(None, fac_type)
    arrived_before = arr < dlv
    return j.select(
        "h",
        _ts(acc).alias("accepted_at"),
        _ts(pl.when(dep > acc).then(dep).otherwise(dep_again)).alias("first_departed_at"),
        _ts(dlv).alias("delivered_at"),
        _ts(pl.when(arrived_before).then(arr).otherwise(arr_again)).alias("last_arrived_at"),
        pl.when(arrived_before)
        .then(pl.col("arr_fac"))
        .otherwise(fac_again)
        .alias("last_arrival_facility"),
    )


def _build(base: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """(scans, items) of ``base``, or None when two item ids share ``h`` (told by the
    second hash ``h2``; rows without it come from a caller that proved none do).

    Arrivals and departures are sorted apart from acceptances and deliveries: two sorts
    of 6.2 and 2.3 M rows cost ~0.2 s less than one of 8.5 M at 10 M events, and the
    dwell and leg rows then come from a sorted frame with nothing to filter out."""
    rank = pl.col("key") % RANK_BITS
    is_move = (rank == _ARR) | (rank == _DEP)
    moves, ends = _sorted(base.filter(is_move)), _sorted(base.filter(~is_move))
    if "h2" in base.columns:
        h, h2 = pl.col("h"), pl.col("h2")
        shared = (h == h.shift(1)) & (h2 != h2.shift(1))
        if moves.select(shared.any()).item() or ends.select(shared.any()).item():
            return None
        # An item of each frame with the same h must be the same item too.
        firsts = [f.filter(_first_rows()).select("h", "h2") for f in (moves, ends)]
        met = firsts[0].join(firsts[1], on="h", how="inner", suffix="_end")
        if met.select((h2 != pl.col("h2_end")).any()).item():
            return None
        moves, ends = moves.drop("h2"), ends.drop("h2")
    return _scan_rows(moves), _item_rows(_firsts(ends), moves)


def tables_from_rows(rows: pl.DataFrame | StageRows) -> StageTables | None:
    """``stage_tables`` of stage rows where no two items share ``h``: those
    ``kpi.state_scan`` kept in its pass (``ScannedState.stage_rows``), or a frame of
    scans (``h, key, facility``). None when given a second hash ``h2`` that tells two
    items sharing ``h`` apart (the caller then builds from the events, which numbers
    items by their id text)."""
    if isinstance(rows, StageRows):
        # The pass split the scans already (nothing to filter), and the acceptances and
        # deliveries need no facility (a narrower sort).
        if rows.moves.is_empty() and rows.ends.is_empty():
            return empty_stage_tables()
        moves = _sorted(rows.moves)
        return StageTables(_scan_rows(moves), _item_rows(_firsts(_sorted(rows.ends)), moves))
    if rows.is_empty():
        return empty_stage_tables()
    built = _build(rows)
    return None if built is None else StageTables(*built)


def stage_tables(events: pl.LazyFrame) -> StageTables:
    """Dwell and leg rows per scan, first and last mile per item, from validated events.

    ``events`` are validated, de-duplicated events already cut at as-of (columns
    ``item_id``, ``event``, ``ts``, ``facility``). See ``kpi.kpis.stages`` for the
    definitions; ties at one instant follow the lifecycle order, then the facility name.
    Two ids sharing ``h`` are caught by a second, independent hash (as in
    ``kpi.state_scan``); items are then numbered by their id text instead.
    """
    base = _base(events)
    if base.is_empty():
        return empty_stage_tables()
    built = _build(base)
    ids = None
    if built is None:
        texts = _stage_rows(events).select("item_id").collect().get_column("item_id")
        ranked = texts.rank("dense").cast(pl.UInt64)
        ids = pl.DataFrame({"h": ranked, "item_id": texts}).unique("h")
        built = _build(base.with_columns(ranked.alias("h"), ranked.alias("h2")))
        assert built is not None  # ranks are distinct per id
    scans, items = built
    return StageTables(scans, items, ids)
