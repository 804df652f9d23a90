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
The rows may also come from ``kpi.state_scan``'s pass: its arrivals and departures,
already sorted, with the first acceptance and delivery of its state (``tables_from_moves``,
the report's), or any stage scans (``tables_from_rows``, the exporter's).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import polars as pl

from kpi.contract import UTC
from kpi.events import RANK_BITS, STAGE, event_in, key_ts, stage
from kpi.kpis.exprs import hours_between
from kpi.state_scan import ITEM_SEEDS, STAGE_SCANS

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

#: From how many stage rows ``_build`` sorts with the streaming engine.
_STREAMING_ROWS: Final = 1_000_000
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


def _sorted(base: pl.DataFrame, by_item: pl.DataFrame | None = None) -> pl.DataFrame:
    """The scans sorted by item, then time, lifecycle stage and facility name, with the
    event's rank ``ev``.

    Items are ordered by a 64-bit hash ``h`` of their id. A log that lists each item's
    scans in time order (one file a day, each in time order) is in that order after one
    stable sort by item, which the check below proves; else it is sorted by time first
    (a single-column sort, then the stable one, cost ~0.6x one multi-column sort).
    Within an item, ties at one instant follow the lifecycle order and then the facility
    name, which takes a full sort only when two scans of an item share an instant and a
    stage (rows equal in all three are equal in every column). ``by_item`` is ``base``
    already sorted by item (the checks below prove its order, whoever sorted it).
    """
    h, key, fac = pl.col("h"), pl.col("key"), pl.col("facility")
    s = base.sort("h", maintain_order=True) if by_item is None else by_item
    if _each_row_and_the_one_before(s, lambda same, k1, k0, f1, f0: same & (k1 < k0)):
        s = base.sort("key").sort("h", maintain_order=True)
    if _each_row_and_the_one_before(s, lambda same, k1, k0, f1, f0: same & (k1 == k0) & (f1 != f0)):
        s = s.sort(["h", "key", fac.cast(pl.String)])
    return s.with_columns((key % RANK_BITS).cast(pl.UInt8).alias("ev"), h.set_sorted())


def _each_row_and_the_one_before(
    s: pl.DataFrame,
    test: Callable[[pl.Series, pl.Series, pl.Series, pl.Series, pl.Series], pl.Series],
) -> bool:
    """Whether ``test`` holds for some row of ``s`` and the one before it, given as
    (same item, key, key before, facility, facility before): zero-copy slices of the
    columns (shifted copies of 6 M-row columns cost fresh pages)."""
    n = s.height
    if n < 2:
        return False
    cur, prev = s.slice(1), s.slice(0, n - 1)
    same = cur.get_column("h") == prev.get_column("h")
    cols = [f.get_column(c) for c in ("key",) for f in (cur, prev)]
    facs = [f.get_column("facility") for f in (cur, prev)]
    return bool(test(same, cols[0], cols[1], facs[0], facs[1]).any())


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
    # One chunk per kind (the first row and the rare ones otherwise make chunks of their
    # own, and the queries over a kind slowed by ~0.05 s each at 10 M events).
    scans = pl.concat([pl.concat(p, rechunk=len(p) > 1) for p in (dwell, legs)])
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


def _end_keys(ends: pl.DataFrame) -> pl.DataFrame:
    """Per item of ``ends`` (acceptances and deliveries sorted like ``_sorted``'s): the
    first acceptance's and delivery's keys, ``h, acc_key, del_key``."""
    ev, key = pl.col("ev"), pl.col("key")
    j = ends.filter(_first_rows()).select("h")
    for kind, name in ((_ACC, "acc_key"), (_DEL, "del_key")):
        rows = ends.filter(ev == kind)
        j = j.join(rows.filter(_first_rows()).select("h", key.alias(name)), on="h", how="left")
    return j


def _item_rows(ends: pl.DataFrame, moves: pl.DataFrame) -> pl.DataFrame:
    """``_items_of`` the first acceptance and delivery of ``ends``."""
    return _items_of(_end_keys(ends), moves)


def _items_of(j: pl.DataFrame, moves: pl.DataFrame) -> pl.DataFrame:
    """Per item of ``j`` (``h, acc_key, del_key`` of each item with an acceptance or a
    delivery), in ``j``'s order: the first departure after the acceptance and the
    delivery's latest arrival before it, from ``moves`` (arrivals and departures sorted
    like ``_sorted``'s: their filters stay sorted by ``h``, and the joins merge)."""
    if not j.get_column("h").flags["SORTED_ASC"]:
        # Sorted by item, the joins below merge: sorting the keys and putting the answer
        # back in ``j``'s order cost 0.3 s against 0.5 s for hash joins (1.2 M items).
        order = j.get_column("h").arg_sort()
        by_item = _items_of(j[order].with_columns(pl.col("h").set_sorted()), moves)
        return by_item[order.arg_sort()]
    ev, key = pl.col("ev"), pl.col("key")
    # Only the columns used below are copied (fewer fresh pages).
    deps = moves.select(pl.col("h", "key").filter(ev == _DEP))
    arrs = moves.select(pl.col("h", "key", "facility").filter(ev == _ARR))
    first_dep = deps.filter(_first_rows()).select("h", key.alias("dep_key"))
    last_arr = arrs.filter(_first_rows(last=True)).select(
        "h", key.alias("arr_key"), pl.col("facility").alias("arr_fac")
    )
    left = {"on": "h", "how": "left", "maintain_order": "left"}
    j = j.join(first_dep, **left).join(last_arr, **left)  # type: ignore[arg-type]
    acc, dep = pl.col("acc_key"), pl.col("dep_key")
    dlv, arr = pl.col("del_key"), pl.col("arr_key")
    early = j.filter(dep < acc).select("h", "acc_key")  # departed before the acceptance
    if early.height:
        again = deps.join(early, on="h").filter(key > acc)
        again = again.group_by("h").agg(key.min().alias("dep_again"))
        j = j.join(again, **left)  # type: ignore[arg-type]
    late = j.filter(arr > dlv).select("h", "del_key")  # arrived again after the delivery
    if late.height:
        again = arrs.join(late, on="h", maintain_order="left").filter(key < dlv)
        again = again.group_by("h", maintain_order=True).agg(
            key.last().alias("arr_again"), pl.col("facility").last().alias("fac_again")
        )
        j = j.join(again, **left)  # type: ignore[arg-type]
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
    # Split and sorted by item in one plan: streaming at scale, where its sorts run on
    # every core (the eager stable sort runs on one) and no filtered copy is made before
    # them; in memory for a set's few rows, where the streaming engine's fixed cost
    # (~0.5 ms a query) is most of the work. Both give the same (stable) order.
    lazy = base.lazy()
    by_item = pl.collect_all(
        [lazy.filter(f).sort("h", maintain_order=True) for f in (is_move, ~is_move)],
        engine="streaming" if base.height >= _STREAMING_ROWS else "in-memory",
    )
    moves, ends = (_sorted(f, f) for f in (f.rechunk() for f in by_item))
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
    # Both are mostly single-threaded polars work on frames they only read: two threads
    # (polars lets go of the GIL) keep both cores busy.
    with ThreadPoolExecutor(2) as pool:
        items = pool.submit(_item_rows, ends, moves)
        return _scan_rows(moves), items.result()


def tables_from_rows(rows: pl.DataFrame) -> StageTables | None:
    """``stage_tables`` of the stage rows ``kpi.state_scan`` kept in its pass
    (``ScannedState.stage_rows``, where no two items share ``h``), or None when given a
    second hash ``h2`` that tells two items sharing ``h`` apart (the caller then builds
    from the events, which numbers items by their id text)."""
    if rows.is_empty():
        return empty_stage_tables()
    built = _build(rows)
    return None if built is None else StageTables(*built)


def tables_from_moves(moves: pl.DataFrame, ends: pl.DataFrame) -> StageTables:
    """``stage_tables`` of the arrivals and departures ``kpi.state_scan`` kept in its
    pass (``ScannedState.stage_rows``: sorted by ``h``, which no two items share) and of
    the items' first acceptance and delivery ``ends`` (``h, accepted_at, delivered_at``
    per item with either, any order; its other columns are carried over, first, into
    ``items``, whose rows follow ``ends``)."""
    moves = _sorted(moves, moves)
    extra = [c for c in ends.columns if c not in ("h", "accepted_at", "delivered_at")]
    j = ends.select(
        "h",
        (pl.col("accepted_at").dt.epoch("us") * RANK_BITS + _ACC).alias("acc_key"),
        (pl.col("delivered_at").dt.epoch("us") * RANK_BITS + _DEL).alias("del_key"),
    )
    # Both are mostly single-threaded polars work on frames they only read: two threads
    # (polars lets go of the GIL) keep both cores busy.
    with ThreadPoolExecutor(2) as pool:
        items = pool.submit(_items_of, j, moves)
        scans = _scan_rows(moves)
        # The item rows follow ``ends``': its other columns are set beside them, not
        # carried through the joins nor reordered (text costs most to move).
        return StageTables(scans, items.result().hstack(ends.select(extra)))


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
