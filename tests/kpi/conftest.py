"""Shared builders for the KPI tests: rows as plain dicts, frames in the pinned schemas.

Tests write events, complaints and facilities as plain dicts (see ``ev``, ``complaint``
and ``facility`` in ``Kit``) so the very same rows feed both the engine (through the
``kit`` fixture's frame builders) and the naive reference in ``reference.py``.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

# Make ``import reference`` work whatever pytest's import mode is.
sys.path.insert(0, str(Path(__file__).parent))

import reference
from reference import utc

from kpi.contract import COMPLAINT_SCHEMA, EVENT_SCHEMA, FACILITY_SCHEMA
from kpi.kpis.query import KpiQuery, Snapshot, compute
from kpi.lifecycle import build_lifecycle
from kpi.sources.folder import DataSet, latest_complaints
from kpi.standards import DEFAULT_STANDARDS, ServiceStandards

Row = dict[str, Any]


def _ts(value: str | dt.datetime | None) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return utc(value)


class Kit:
    """Row builders (plain dicts) and frame builders (polars, pinned schemas)."""

    counter = 0

    @classmethod
    def ev(
        cls,
        item: str,
        event: str,
        ts: str | dt.datetime,
        facility: str = "F1",
        *,
        product: str | None = None,
        origin: str | None = None,
        destination: str | None = None,
        promised_by: str | dt.datetime | None = None,
        reason: str | None = None,
        event_id: str | None = None,
    ) -> Row:
        """One event row; ``accepted`` defaults to express CN-BJ -> CN-SH."""
        if event == "accepted":
            product = product or "express"
            origin = origin or "CN-BJ"
            destination = destination or "CN-SH"
        if event == "delivery_failed":
            reason = reason or "addressee_absent"
        if event_id is None:
            cls.counter += 1
            event_id = f"e{cls.counter:06d}"
        return {
            "event_id": event_id,
            "item_id": item,
            "event": event,
            "ts": _ts(ts),
            "facility": facility,
            "product": product,
            "origin": origin,
            "destination": destination,
            "promised_by": _ts(promised_by),
            "reason": reason,
        }

    @staticmethod
    def complaint(
        cid: str,
        opened_at: str | dt.datetime,
        *,
        region: str = "CN-SH",
        category: str = "delay",
        product: str | None = "express",
        valid: bool | None = True,
        resolved_at: str | dt.datetime | None = None,
        updated_at: str | dt.datetime | None = None,
        item_id: str | None = None,
    ) -> Row:
        """One complaint row (version)."""
        return {
            "complaint_id": cid,
            "opened_at": _ts(opened_at),
            "category": category,
            "item_id": item_id,
            "region": region,
            "product": product,
            "valid": valid,
            "resolved_at": _ts(resolved_at),
            "updated_at": _ts(updated_at),
        }

    @staticmethod
    def facility(
        fid: str, *, type: str = "processing", region: str = "CN-SH", threshold: int | None = None
    ) -> Row:
        """One facility row."""
        return {
            "facility": fid,
            "name": f"Facility {fid}",
            "type": type,
            "region": region,
            "backlog_threshold": threshold,
        }

    @staticmethod
    def events(rows: list[Row]) -> pl.LazyFrame:
        """Events in the pinned schema."""
        return (
            pl.DataFrame(rows, schema=EVENT_SCHEMA, orient="row").lazy()
            if rows
            else (pl.LazyFrame(schema=EVENT_SCHEMA))
        )

    @staticmethod
    def complaints(rows: list[Row]) -> pl.LazyFrame:
        """Complaint versions in the pinned schema."""
        if not rows:
            return pl.LazyFrame(schema=COMPLAINT_SCHEMA)
        return pl.DataFrame(rows, schema=COMPLAINT_SCHEMA, orient="row").lazy()

    @staticmethod
    def facilities(rows: list[Row]) -> pl.DataFrame:
        """Facilities in the pinned schema."""
        return pl.DataFrame(rows or None, schema=FACILITY_SCHEMA, orient="row")

    @classmethod
    def lifecycle(
        cls,
        rows: list[Row],
        as_of: str | dt.datetime | None = None,
        standards: ServiceStandards = DEFAULT_STANDARDS,
    ) -> dict[str, Row]:
        """The engine's lifecycle table as ``{item_id: row}``."""
        table = build_lifecycle(cls.events(rows), standards, _ts(as_of)).collect()
        return {row["item_id"]: row for row in table.to_dicts()}

    @classmethod
    def snapshot(
        cls,
        events: list[Row],
        complaints: list[Row] | None = None,
        facilities: list[Row] | None = None,
        as_of: str | dt.datetime | None = None,
        standards: ServiceStandards = DEFAULT_STANDARDS,
    ) -> Snapshot:
        """A snapshot as the report/API/exporter build it from a data folder."""
        ds = DataSet(
            events=cls.events(events),
            complaints=latest_complaints(cls.complaints(complaints or [])),
            facilities=cls.facilities(facilities or []),
            standards=standards,
        )
        return Snapshot.from_dataset(ds, _ts(as_of))

    @staticmethod
    def query(snap: Snapshot, *kpis: str, **kw: Any) -> pl.DataFrame:
        """``compute`` with ``KpiQuery`` keywords; ISO strings are accepted for instants."""
        for name in ("start", "end", "as_of"):
            if isinstance(kw.get(name), str):
                kw[name] = utc(kw[name])
        if "by" in kw:
            kw["by"] = tuple(kw["by"])
        return compute(snap, KpiQuery(kpis=kpis or None, **kw))

    @classmethod
    def one(cls, snap: Snapshot, *kpis: str, **kw: Any) -> Row:
        """The single row of an ungrouped question."""
        frame = cls.query(snap, *kpis, **kw)
        assert frame.height == 1, frame
        return frame.row(0, named=True)

    @classmethod
    def rows(cls, snap: Snapshot, *kpis: str, **kw: Any) -> dict[Any, Row]:
        """Grouped answer as ``{key: {kpi: value}}``; key = the one dimension or a tuple."""
        frame = cls.query(snap, *kpis, **kw)
        keys = [c for c in frame.columns if c not in kpis]
        out = {}
        for row in frame.to_dicts():
            k = tuple(row.pop(c) for c in keys)
            out[k[0] if len(k) == 1 else k] = row
        return out

    @staticmethod
    def keyed(
        frame: pl.DataFrame, names: tuple[str, ...] | list[str]
    ) -> dict[tuple[Any, ...], Row]:
        """An answer frame as ``{(dimension values..., period in UTC): {kpi: value}}``."""
        keys = [c for c in frame.columns if c not in names]
        out: dict[tuple[Any, ...], Row] = {}
        for row in frame.to_dicts():
            # Periods in UTC: local times differing only by DST fold compare equal.
            key = tuple(
                v.astimezone(dt.UTC) if isinstance(v, dt.datetime) else v
                for v in (row.pop(c) for c in keys)
            )
            assert key not in out, f"group {key} twice"
            out[key] = row
        return out

    @staticmethod
    def assert_close(got: dict[Any, Row], want: dict[Any, Row], tol: float = 1e-9) -> None:
        """Same groups, same values; floats within ``tol`` (relative or absolute)."""
        assert set(got) == set(want), (
            f"groups only in engine: {set(got) - set(want)}; "
            f"only in reference: {set(want) - set(got)}"
        )
        for key, row in want.items():
            for name, value in row.items():
                actual = got[key][name]
                if isinstance(value, float) or isinstance(actual, float):
                    ok = (value is None and actual is None) or (
                        value is not None
                        and actual is not None
                        and math.isclose(actual, value, rel_tol=tol, abs_tol=tol)
                    )
                else:
                    ok = actual == value and type(actual) is type(value)
                assert ok, f"{name} at {key}: engine {actual!r} != reference {value!r}"

    @classmethod
    def answer(
        cls,
        events: list[Row],
        kpis: tuple[str, ...] | list[str],
        *,
        complaints: list[Row] | None = None,
        facilities: list[Row] | None = None,
        as_of: str | dt.datetime | None = None,
        standards: ServiceStandards = DEFAULT_STANDARDS,
        **kw: Any,
    ) -> dict[tuple[Any, ...], Row]:
        """The engine's answer keyed by group, asserted equal to the reference's."""
        snap = cls.snapshot(events, complaints, facilities, as_of, standards)
        got = cls.keyed(cls.query(snap, *kpis, **kw), kpis)
        want = reference.kpis(
            events,
            complaints or [],
            facilities or [],
            standards,
            kpis,
            by=kw.get("by", ()),
            start=_ts(kw.get("start")),
            end=_ts(kw.get("end")),
            as_of=_ts(as_of),
            granularity=kw.get("granularity"),
            tz=kw.get("tz", "UTC"),
            stall_hours=kw.get("stall_hours", 48.0),
        )
        cls.assert_close(got, want)
        return got


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    """The builders (session-scoped, so hypothesis tests can use them too)."""
    return Kit
