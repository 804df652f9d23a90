"""The Olist slice of tests/fixtures/olist as a data folder (real orders nobody here wrote)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

OLIST = Path(__file__).parent / "fixtures" / "olist" / "orders-2018-03-01-to-14.csv"
BRT = "-03:00"  # Olist timestamps are local Brazilian time without an offset


def olist_folder(target: Path) -> Path:
    """The Olist slice as a data folder: hand-over = accepted, customer delivery = delivered."""
    orders = pl.read_csv(OLIST, infer_schema=False)

    def ts(col: str) -> pl.Expr:
        return (pl.col(col).str.replace(" ", "T") + BRT).alias("ts")

    common = [pl.col("order_id").alias("item_id")]
    accepted = orders.filter(pl.col("order_delivered_carrier_date").is_not_null()).select(
        (pl.col("order_id") + "-a").alias("event_id"),
        *common,
        pl.lit("accepted").alias("event"),
        ts("order_delivered_carrier_date"),
        pl.lit("BR-CARRIER").alias("facility"),
        pl.lit("standard").alias("product"),
        pl.lit("BR").alias("origin"),
        pl.lit("BR").alias("destination"),
        (pl.col("order_estimated_delivery_date").str.slice(0, 10) + "T23:59:59" + BRT).alias(
            "promised_by"
        ),
    )
    delivered = orders.filter(pl.col("order_delivered_customer_date").is_not_null()).select(
        (pl.col("order_id") + "-d").alias("event_id"),
        *common,
        pl.lit("delivered").alias("event"),
        ts("order_delivered_customer_date"),
        pl.lit("BR-LASTMILE").alias("facility"),
    )
    (target / "events").mkdir(parents=True)
    pl.concat([accepted, delivered], how="diagonal").sort("ts").write_csv(
        target / "events" / "olist.csv"
    )
    return target
