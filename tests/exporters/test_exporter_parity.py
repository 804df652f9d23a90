"""After catch-up the exporter's counters equal ``kpi report``'s all-time answers, label by
label, however the history's files are cut: by format, by facility, by hour, random names."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import polars as pl
import pytest

from exporters import catalog as cat
from exporters.ingest import IngestConfig, Ingestor
from kpi.simulate import SimConfig, generate
from tests.exporters.parity import (
    complaints_frame,
    exporter_counters,
    report_counters,
    split_write,
    write_frame,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
T0 = dt.datetime(2027, 1, 11, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


def drain(ing: Ingestor) -> None:
    while ing.step().pending:
        pass
    ing.step()


def catch_up(data: Path, state: Path) -> Ingestor:
    """A first start without checkpoint, in small micro-batches (many per set)."""
    ing = Ingestor(IngestConfig(data, state, max_batch_bytes=64 << 10, max_batch_rows=1_500))
    drain(ing)
    return ing


def assert_parity(ing: Ingestor, data: Path) -> None:
    want, want_transit = report_counters(data)
    got, got_transit = exporter_counters(ing.counters)
    assert ing.ledger.held_deliveries() == 0
    for name in want:
        assert got[name] == want[name], name
    assert got_transit == want_transit


@pytest.fixture(scope="module")
def history() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """A simulated week (events, facilities) plus complaints whose versions differ."""
    sim = generate(SimConfig(items=1_200, days=6, seed=11, start=T0))
    events = sim.events.select(sim.events.columns)
    rows = []
    for n in range(40):
        opened = T0 + (n + 6) * H  # inside the events' span: the report's all-time window
        base = {
            "complaint_id": f"C{n}",
            "opened_at": opened,
            "category": ["delay", "loss", "damage"][n % 3],
            "item_id": None,
            "region": ["CN-SH", "CN-BJ"][n % 2],
            "product": "express",
            "valid": None,
            "resolved_at": None,
            "updated_at": opened,
        }
        rows.append(base)
        if n % 2:  # a later version decides validity and resolves it
            rows.append(
                {
                    **base,
                    "valid": n % 4 == 1,
                    "resolved_at": opened + 30 * H,
                    "updated_at": opened + 30 * H,
                }
            )
    return events, sim.facilities, complaints_frame(rows)


def _write_complaints(data: Path, complaints: pl.DataFrame) -> None:
    # Newer versions in the file read first.
    newer = complaints.filter(pl.col("updated_at") > pl.col("opened_at"))
    older = complaints.filter(pl.col("updated_at") == pl.col("opened_at"))
    write_frame(data / "complaints" / "a-updates.jsonl", newer)
    write_frame(data / "complaints" / "b-opened.csv", older)


def test_split_by_format_deliveries_read_before_acceptances(
    tmp_path: Path, history: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]
) -> None:
    events, facilities, complaints = history
    data = tmp_path / "data"
    ev = pl.col("event")
    write_frame(
        data / "events" / "part-a.csv",
        events.filter(ev.is_in(["delivered", "delivery_failed", "returned"])),
    )
    write_frame(
        data / "events" / "part-b.jsonl",
        events.filter(ev.is_in(["arrived", "departed", "out_for_delivery"])),
    )
    write_frame(data / "events" / "part-c.parquet", events.filter(ev == "accepted"))
    # The same deliveries again in another file: duplicates count once.
    write_frame(data / "events" / "part-d.jsonl", events.filter(ev == "delivered").head(50))
    facilities.write_csv(data / "facilities.csv")
    _write_complaints(data, complaints)
    ing = catch_up(data, tmp_path / "state")
    assert_parity(ing, data)
    assert ing.counters.total(cat_rejected()) == 50  # the duplicates


def cat_rejected() -> cat.MetricSpec:
    return cat.EXPORTER_EVENTS_REJECTED


@pytest.mark.parametrize("cut", ["facility", "hour", "random"])
def test_split_by_facility_hour_or_at_random(
    tmp_path: Path, history: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame], cut: str
) -> None:
    events, facilities, complaints = history
    data = tmp_path / "data"
    rng = random.Random(cut)
    key = {
        "facility": pl.col("facility").hash(7) % 60,  # whole facilities per file
        "hour": pl.col("ts").dt.truncate("1h"),
        "random": pl.int_range(pl.len()).shuffle(seed=5) % 37,
    }[cut]
    split_write(data / "events", events, key, rng)
    facilities.write_csv(data / "facilities.csv")
    _write_complaints(data, complaints)
    assert_parity(catch_up(data, tmp_path / "state"), data)


def olist_events() -> pl.DataFrame:
    """The Olist sample as events: hand-over to the carrier = acceptance, customer delivery
    = delivery, estimated date = promise; local times read as Brasília time (UTC-3)."""
    raw = pl.read_csv(FIXTURES / "olist_orders_sample.csv", infer_schema=False)
    brt = "-03:00"

    def ts(col: str) -> pl.Expr:
        return (pl.col(col) + brt).str.to_datetime("%Y-%m-%d %H:%M:%S%:z", time_zone="UTC")

    common = [pl.col("order_id").alias("item_id")]
    accepted = raw.filter(pl.col("order_delivered_carrier_date").is_not_null()).select(
        (pl.col("order_id") + "-a").alias("event_id"),
        *common,
        pl.lit("accepted").alias("event"),
        ts("order_delivered_carrier_date").alias("ts"),
        pl.lit("BR-CARRIER").alias("facility"),
        pl.lit("standard").alias("product"),
        pl.lit("BR").alias("origin"),
        pl.lit("BR").alias("destination"),
        ts("order_estimated_delivery_date").alias("promised_by"),
        pl.lit(None, pl.String).alias("reason"),
    )
    delivered = raw.filter(pl.col("order_delivered_customer_date").is_not_null()).select(
        (pl.col("order_id") + "-d").alias("event_id"),
        *common,
        pl.lit("delivered").alias("event"),
        ts("order_delivered_customer_date").alias("ts"),
        pl.lit("BR-CUSTOMER").alias("facility"),
        *(pl.lit(None, pl.String).alias(c) for c in ("product", "origin", "destination")),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("promised_by"),
        pl.lit(None, pl.String).alias("reason"),
    )
    return pl.concat([accepted, delivered], how="vertical")


def test_olist_sample_deliveries_first(tmp_path: Path) -> None:
    events = olist_events()
    data = tmp_path / "data"
    write_frame(
        data / "events" / "1-deliveries.jsonl", events.filter(pl.col("event") == "delivered")
    )
    write_frame(data / "events" / "2-acceptances.csv", events.filter(pl.col("event") == "accepted"))
    ing = catch_up(data, tmp_path / "state")
    assert_parity(ing, data)
    # A figure of the data itself, independent of both: deliveries after the estimated date.
    raw = pl.read_csv(FIXTURES / "olist_orders_sample.csv", infer_schema=False).filter(
        pl.col("order_delivered_customer_date").is_not_null()
        & pl.col("order_delivered_carrier_date").is_not_null()
    )
    late = raw.filter(
        pl.col("order_delivered_customer_date") > pl.col("order_estimated_delivery_date")
    ).height
    assert ing.counters.value(cat.ITEMS_DELIVERED, ("standard", "BR", "false")) == late
    assert ing.counters.total(cat.ITEMS_DELIVERED) == raw.height + _delivered_without_carrier(raw)


def _delivered_without_carrier(raw: pl.DataFrame) -> int:
    del raw
    full = pl.read_csv(FIXTURES / "olist_orders_sample.csv", infer_schema=False)
    return full.filter(
        pl.col("order_delivered_customer_date").is_not_null()
        & pl.col("order_delivered_carrier_date").is_null()
    ).height
