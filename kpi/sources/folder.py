"""A data folder as validated LazyFrames: events, complaints, facilities, standards."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import polars as pl

from kpi.contract import FACILITY_SCHEMA, FACILITY_TYPES, SCHEMAS, Kind, s10_invalid_expr
from kpi.sources.files import RawBatch, file_format, read_file
from kpi.sources.validate import (
    ROW,
    SOURCE,
    dedupe,
    good_rows,
    ids_distinct,
    rejected_rows,
    validate_lazy,
    validate_split,
)
from kpi.standards import STANDARDS_FILE, ReferenceFileError, ServiceStandards, load_standards

FACILITIES_FILE: Final = "facilities.csv"
#: Columns ``facilities.csv`` must have (``name`` and ``backlog_threshold`` may be absent).
FACILITY_REQUIRED: Final = ("facility", "type", "region")
REJECTS_DIR: Final = "_rejects"


def source_files(data_dir: Path, kind: Kind) -> list[Path]:
    """Files of one stream in a stable order (by name), skipping unsupported names."""
    folder = data_dir / kind.value
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and file_format(p) is not None)


def unreadable_paths(data_dir: Path) -> list[tuple[str, str]]:
    """(relative path, why) of every stream folder or source file that cannot be read now."""
    out: list[tuple[str, str]] = []
    for kind in Kind:
        folder = data_dir / kind.value
        try:
            names = sorted(os.listdir(folder))
        except FileNotFoundError:
            continue
        except OSError as exc:
            out.append((f"{kind.value}/", exc.strerror or str(exc)))
            continue
        for name in names:
            path = folder / name
            if file_format(path) is None or name.startswith("."):
                continue
            try:
                with path.open("rb"):
                    pass
            except IsADirectoryError:
                continue
            except OSError as exc:
                out.append((f"{kind.value}/{name}", exc.strerror or str(exc)))
    return out


def validated(
    batch: RawBatch, kind: Kind, not_after: dt.datetime | None = None
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(good rows, row-level rejects) of one raw batch (events after ``not_after``: ``future_ts``)."""
    checked = validate_lazy(batch.frame, kind, not_after)
    return good_rows(checked, kind), rejected_rows(checked, batch.frame)


def validated_frames(
    batch: RawBatch, kind: Kind, not_after: dt.datetime | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``validated`` collected: the rows checked once, good rows and rejects split from them
    (``validate_split``: the reject machinery runs for the failing rows only)."""
    return validate_split(batch.frame, kind, not_after)


def latest_complaints(complaints: pl.LazyFrame) -> pl.LazyFrame:
    """One row per complaint: the version with the latest ``updated_at``, else the last read."""
    order = pl.int_range(pl.len()).alias("_order")
    return (
        complaints.with_columns(order)
        .sort(["updated_at", "_order"], nulls_last=False)
        .group_by("complaint_id", maintain_order=True)
        .last()
        .drop("_order")
        .select(SCHEMAS[Kind.COMPLAINTS].keys())
    )


def load_facilities(data_dir: Path) -> pl.DataFrame:
    """``facilities.csv`` in its schema (empty when the folder has none).

    Validated completely: required columns, a non-blank facility id appearing once,
    a known type, a whole non-negative threshold (or blank: none). Any problem raises
    ``ReferenceFileError`` listing every reason (a duplicated row would double a
    facility's backlog; a threshold ``abc`` would silently become "no threshold").
    """
    path = data_dir / FACILITIES_FILE
    if not path.exists():
        return pl.DataFrame(schema=FACILITY_SCHEMA)
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except Exception as exc:  # unreadable, not CSV, ragged rows (polars error types vary)
        raise ReferenceFileError(FACILITIES_FILE, [f"unreadable: {exc}"]) from exc
    problems = [f"missing column {c!r}" for c in FACILITY_REQUIRED if c not in raw.columns]
    if problems:
        raise ReferenceFileError(FACILITIES_FILE, problems)
    frame = raw.select(
        pl.col(c).str.strip_chars() if c in raw.columns else pl.lit(None, pl.String).alias(c)
        for c in FACILITY_SCHEMA
    ).with_row_index("_line", offset=2)  # line 1 is the header
    threshold = pl.col("backlog_threshold")
    checks = {
        "blank facility id": pl.col("facility").fill_null("") == "",
        "unknown type (use collection, processing or delivery)": pl.col("type").is_not_null()
        & ~pl.col("type").is_in(FACILITY_TYPES),
        "threshold is not a whole number >= 0": threshold.is_not_null()
        & (threshold != "")
        & ~threshold.str.contains(r"^[0-9]+$"),
        "facility listed more than once": pl.col("facility").is_duplicated()
        & (pl.col("facility").fill_null("") != ""),
    }
    for reason, bad in checks.items():
        hits = frame.filter(bad)
        if hits.height:
            where = ", ".join(
                f"line {n} ({f})" for n, f in hits.select("_line", "facility").head(5).iter_rows()
            )
            more = f" and {hits.height - 5} more" if hits.height > 5 else ""
            problems.append(f"{reason}: {where}{more}")
    if problems:
        raise ReferenceFileError(FACILITIES_FILE, problems)
    return frame.select(
        pl.col(c).replace("", None).cast(t, strict=True) for c, t in FACILITY_SCHEMA.items()
    )


def reference_problems(data_dir: Path) -> dict[str, list[str]]:
    """Why each reference file of a folder would be refused (empty when both are fine)."""
    out: dict[str, list[str]] = {}
    for file, load in ((FACILITIES_FILE, load_facilities), (STANDARDS_FILE, load_standards)):
        try:
            load(data_dir)
        except ReferenceFileError as exc:
            out[file] = exc.problems
    return out


@dataclass
class FileReport:
    """What reading one file found."""

    source: str
    kind: Kind
    rows_read: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    duplicate_ids: int = 0
    invalid_s10: int = 0

    @property
    def rejected_total(self) -> int:
        """All rejected rows (a file-level reject counts once)."""
        return sum(self.rejected.values())


class DataSet:
    """A data folder, validated: frames in the pinned schema, ready for the KPI engine.

    ``events`` may be given as a function that plans them: it runs on first use, so a
    caller that never needs the validated rows (the state's fast path reads
    ``event_files`` itself) never pays for planning them.
    """

    def __init__(
        self,
        events: pl.LazyFrame | Callable[[], pl.LazyFrame],
        complaints: pl.LazyFrame,
        facilities: pl.DataFrame,
        standards: ServiceStandards,
        event_files: Sequence[Path] = (),
        events_read: Callable[[], ReadCounts] | None = None,
    ) -> None:
        self._events = events
        self.complaints = complaints
        self.facilities = facilities
        self.standards = standards
        #: The raw files behind ``events`` (empty when the events come from elsewhere).
        self.event_files = tuple(event_files)
        #: What reading those files found, before validation (None when unknown).
        self.events_read = events_read

    @property
    def events(self) -> pl.LazyFrame:
        """Validated, de-duplicated events in the pinned schema."""
        if not isinstance(self._events, pl.LazyFrame):
            self._events = self._events()
        return self._events


@dataclass(frozen=True)
class ReadCounts:
    """Rows read from a folder's files of one kind (parsed, or rejected while parsing),
    and files that could not be read at all."""

    rows: int
    unreadable_files: int


class _EventFiles:
    """A folder's event files, read once on first use: the validated plan, and counts."""

    def __init__(self, data_dir: Path, not_after: dt.datetime | None = None) -> None:
        self._dir = data_dir
        self._not_after = not_after
        self._batches: list[RawBatch] | None = None

    def _read(self) -> list[RawBatch]:
        if self._batches is None:
            self._batches = [read_file(p) for p in source_files(self._dir, Kind.EVENTS)]
        return self._batches

    def plan(self) -> pl.LazyFrame:
        return validated_frame(self._read(), Kind.EVENTS, self._not_after)

    def counts(self) -> ReadCounts:
        return read_counts(self._read())


def read_counts(batches: Sequence[RawBatch]) -> ReadCounts:
    """What reading ``batches`` found: rows (parsed or rejected while parsing), and files."""
    # Parquet row counts come from the footer; CSV and JSONL are parsed in memory.
    parsed = sum(b.frame.select(pl.len()).collect().item() for b in batches)
    rejects = [r for b in batches for r in b.rejects]
    return ReadCounts(
        rows=parsed + sum(r["row"] is not None for r in rejects),
        unreadable_files=sum(r["row"] is None for r in rejects),
    )


def _stream(data_dir: Path, kind: Kind) -> pl.LazyFrame:
    return validated_frame([read_file(p) for p in source_files(data_dir, kind)], kind)


def validated_frame(
    batches: Sequence[RawBatch], kind: Kind, not_after: dt.datetime | None = None
) -> pl.LazyFrame:
    """The good rows of ``batches`` in the pinned schema, de-duplicated (first read wins)."""
    frames = [validated(batch, kind, not_after)[0] for batch in batches]
    if not frames:
        return pl.LazyFrame(schema=SCHEMAS[kind])
    good = pl.concat(frames, how="vertical")
    # De-duplication keeps the first read of each id; it is the one blocking step of
    # the events plan (every row is held), so it is left out when a cheap eager check
    # of the raw ids proves that no id repeats (the result is the same frame).
    if kind is not Kind.EVENTS or not ids_distinct([b.frame for b in batches], kind):
        good = dedupe(good, kind)
    good = good.drop(SOURCE, ROW)
    return latest_complaints(good) if kind is Kind.COMPLAINTS else good


def _clear_of(files: Sequence[Path], not_after: dt.datetime) -> bool:
    """Whether every file is typed Parquet with no event after ``not_after`` (cheap: one column)."""
    if not files or any(file_format(p) != "parquet" for p in files):
        return False
    try:
        newest = pl.scan_parquet(list(files)).select(pl.col("ts").max()).collect().item()
    except Exception:  # untyped or unreadable: the general path decides, row by row
        return False
    return isinstance(newest, dt.datetime) and newest.tzinfo is not None and newest <= not_after


def load_data_dir(data_dir: Path, not_after: dt.datetime | None = None) -> DataSet:
    """The folder's validated, de-duplicated frames (rejects are dropped, see ``validate_data_dir``).

    Lazy, except that planning the events reads the event ids once, on first use of
    ``DataSet.events``, to decide whether they need de-duplicating (see ``ids_distinct``).
    With ``not_after``, events dated later are rejects (``future_ts``); the raw
    files' fast path (``DataSet.event_files``) is then offered only when no event can
    be one.
    """
    events = _EventFiles(data_dir, not_after)
    files = source_files(data_dir, Kind.EVENTS)
    if not_after is not None and not _clear_of(files, not_after):
        files = []
    return DataSet(
        events=events.plan,
        complaints=_stream(data_dir, Kind.COMPLAINTS),
        facilities=load_facilities(data_dir),
        standards=load_standards(data_dir),
        event_files=files,
        events_read=events.counts,
    )


def validate_data_dir(
    data_dir: Path, rejects_dir: Path | None = None, not_after: dt.datetime | None = None
) -> list[FileReport]:
    """Check every file, write rejects (source, row, reason, raw) and report counts per file.

    Rejects go to ``<rejects_dir>/<kind>.jsonl`` (default ``DATA_DIR/_rejects``).
    Duplicate event ids are counted against every id seen earlier in the folder.
    Events dated after ``not_after`` are rejects (``future_ts``).
    """
    out_dir = rejects_dir or data_dir / REJECTS_DIR
    reports: list[FileReport] = []
    for kind in Kind:
        # Distinct good event ids of every file, to count ids seen in an earlier file.
        file_ids: list[pl.DataFrame] = []
        kind_reports: list[FileReport] = []
        rejects: list[pl.DataFrame] = []
        for path in source_files(data_dir, kind):
            batch = read_file(path)
            good, bad = validated(batch, kind, not_after)
            rep = FileReport(source=str(path), kind=kind)
            if kind is Kind.EVENTS:
                summary = good.select(
                    pl.col("event_id"), s10_invalid_expr("item_id").alias("bad_s10")
                )
            else:
                summary = good.select(pl.len())
            # One validation pass serves both the rejects and the good rows' figures.
            bad_rows, stats = pl.collect_all([bad, summary])
            file_rejects = pl.concat([batch.rejects_frame(), bad_rows], how="vertical")
            rejects.append(file_rejects)
            rep.rejected.update(file_rejects["reason"].to_list())
            if kind is Kind.EVENTS:
                ids = stats["event_id"]
                rep.accepted = stats.height
                rep.duplicate_ids = ids.len() - ids.n_unique()  # + ids of earlier files, below
                rep.invalid_s10 = int(stats["bad_s10"].sum())
                file_ids.append(
                    ids.unique().drop_nulls().to_frame().with_columns(_file=len(file_ids))
                )
            else:
                rep.accepted = stats.item()
            rep.rows_read = rep.accepted + file_rejects.filter(pl.col("row").is_not_null()).height
            kind_reports.append(rep)
        if file_ids:
            # Distinct ids of a file that some earlier file already had, in one pass.
            earlier = (
                pl.concat(file_ids, how="vertical")
                .with_columns(pl.col("_file").min().over("event_id").alias("_first"))
                .group_by("_file")
                .agg((pl.col("_first") < pl.col("_file")).sum().alias("n"))
            )
            for i, n in earlier.iter_rows():
                kind_reports[i].duplicate_ids += int(n)
        reports += kind_reports
        if rejects:
            out_dir.mkdir(parents=True, exist_ok=True)
            all_rejects = pl.concat(rejects, how="vertical")
            all_rejects.write_ndjson(out_dir / f"{kind.value}.jsonl")
    return reports
