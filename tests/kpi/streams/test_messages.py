"""kpi.streams.messages: a poll's values parsed in bulk, validated like a file's lines."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpi.contract import Kind, RejectReason
from kpi.sources.files import parse_jsonl
from kpi.sources.folder import validated
from kpi.streams.messages import MAX_MESSAGE_BYTES, Messages, parse_messages, to_messages
from tests.conftest import write_rows

GOOD = {
    "event_id": "e1",
    "item_id": "RR123456785CN",
    "event": "accepted",
    "ts": "2027-01-11T08:00:00+08:00",
    "facility": "CO-1",
    "product": "express",
    "origin": "CN-GD",
    "destination": "CN-BJ",
}


def _poll(values: list[bytes | None]) -> Messages:
    return Messages(values, ["kafka:t/3"] * len(values), list(range(100, 100 + len(values))))


def _outcome(values: list[bytes | None]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(good rows, every reject) of a poll, the way the exporter validates it."""
    batch = parse_messages(_poll(values), Kind.EVENTS)
    good, bad = validated(batch, Kind.EVENTS)
    rejects = pl.concat([batch.rejects_frame(), bad.collect()], how="vertical_relaxed")
    return good.collect(), rejects.sort("row")


def test_bad_messages_are_rejects_with_reasons_and_good_ones_still_count() -> None:
    values: list[bytes | None] = [
        json.dumps(GOOD).encode(),
        None,  # a tombstone
        b"{not json",
        b"[1, 2]",
        json.dumps({**GOOD, "event_id": "e2", "ts": 1736553600}).encode(),  # wrong type
        json.dumps({"event_id": "e3", "event": "arrived"}).encode(),  # missing fields
        b"{}",
        b'{"event_id": "e4", "pad": "' + b"x" * (10 << 20) + b'"}',  # a 10 MB message
        b"",
        json.dumps({**GOOD, "event_id": "e5"}, indent=1).encode(),  # line breaks inside
    ]
    good, rejects = _outcome(values)
    assert good["event_id"].to_list() == ["e1", "e5"]
    assert good["_row"].to_list() == [100, 109]
    assert set(good["_source"]) == {"kafka:t/3"}
    got = {(r["row"], r["reason"], r["field"]) for r in rejects.iter_rows(named=True)}
    assert got == {
        (101, RejectReason.MALFORMED_ROW.value, None),
        (102, RejectReason.MALFORMED_ROW.value, None),
        (103, RejectReason.MALFORMED_ROW.value, None),
        (104, RejectReason.BAD_TIMESTAMP.value, "ts"),
        (105, RejectReason.MISSING_FIELD.value, "item_id"),
        (106, RejectReason.MISSING_FIELD.value, "event_id"),
        (107, RejectReason.LINE_TOO_LONG.value, None),
        (108, RejectReason.MALFORMED_ROW.value, None),
    }
    raw = dict(zip(rejects["row"], rejects["raw"], strict=True))
    assert raw[101] == "tombstone (no value)"
    assert raw[107] == f"{len(values[7] or b'')} bytes"
    assert len(values[7] or b"") > MAX_MESSAGE_BYTES


def test_numbers_booleans_and_objects_are_read_as_their_text() -> None:
    value = {**GOOD, "event_id": 42, "facility": {"code": "CO-1"}, "reason": True}
    good, rejects = _outcome([json.dumps(value).encode()])
    assert rejects.is_empty()
    row = good.row(0, named=True)
    assert row["event_id"] == "42"
    assert json.loads(row["facility"]) == {"code": "CO-1"}
    assert row["reason"] == "true"


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.text(max_size=8),
    st.sampled_from(["accepted", "arrived", "2027-01-11T08:00:00Z", "2027-01-11 08:00", "CN-GD"]),
)
# At least one key: the file reader fails on a bare `{}` line (kpi.sources.files builds a
# frame without columns for it), so that case is checked on its own above instead.
records = st.dictionaries(
    st.sampled_from([*GOOD, "promised_by", "reason", "extra"]),
    json_scalars,
    min_size=1,
    max_size=10,
)
values_strategy = st.lists(
    st.one_of(
        records.map(lambda r: json.dumps(r).encode()),
        st.sampled_from([b"{bad", b"[]", b'"text"', b"17"]),
    ),
    max_size=12,
)


@settings(max_examples=30, deadline=None)
@given(values_strategy)
def test_a_poll_validates_as_the_same_lines_in_a_jsonl_file(values: list[bytes]) -> None:
    # The JSONL file reader (one orjson parse per line) is the reference.
    good, rejects = _outcome(list(values))
    file_batch = parse_jsonl(b"\n".join(values), "f", first_row=100)
    file_good, file_bad = validated(file_batch, Kind.EVENTS)
    expected_rejects = pl.concat(
        [file_batch.rejects_frame(), file_bad.collect()], how="vertical_relaxed"
    ).sort("row")
    assert good.drop("_source").equals(file_good.collect().drop("_source"))
    assert rejects.select("row", "reason", "field").equals(
        expected_rejects.select("row", "reason", "field")
    )


def test_rows_to_messages_round_trip_text_and_typed_files(tmp_path: Path) -> None:
    rows = [
        GOOD,
        {
            **GOOD,
            "event_id": "e2",
            "item_id": " RR2 ",
            "event": "EMI",
            "ts": "2027-01-12T10:00:00Z",
        },
        {"event_id": "e3", "item_id": None, "event": "arrived", "ts": "2027-01-12 10:00"},
    ]
    text = write_rows(tmp_path / "a.csv", rows)
    typed = write_rows(tmp_path / "b.parquet", rows[:2], typed=True)
    keys, values = to_messages(pl.scan_csv(text, infer_schema=False), Kind.EVENTS)
    assert keys == [b"RR123456785CN", b"RR2", None]
    decoded = [json.loads(v) for v in values]
    for sent, row in zip(decoded, rows, strict=True):
        assert {k: v for k, v in sent.items() if v is not None} == {
            k: v for k, v in row.items() if v is not None
        }
    keys, values = to_messages(pl.scan_parquet(typed), Kind.EVENTS)
    assert keys == [b"RR123456785CN", b"RR2"]
    # Typed timestamps travel as ISO 8601 in UTC: the same instants.
    assert [json.loads(v)["ts"] for v in values] == [
        "2027-01-11T00:00:00.000000Z",
        "2027-01-12T10:00:00.000000Z",
    ]
    # Parsed back at the other end they validate to the typed file's rows.
    good, rejects = _outcome(list(values))
    assert rejects.is_empty()
    assert good.drop("_source", "_row").equals(
        validated(parse_jsonl(b"\n".join(values), "x"), Kind.EVENTS)[0]
        .collect()
        .drop("_source", "_row")
    )


@pytest.mark.parametrize("kind", list(Kind))
def test_complaints_are_keyed_by_their_id(kind: Kind, tmp_path: Path) -> None:
    columns = ("complaint_id", "item_id", "region")
    row = {"complaint_id": "C1", "item_id": "RR1", "region": "CN-GD"}
    path = write_rows(tmp_path / "c.csv", [row], columns=columns)
    keys, _ = to_messages(pl.scan_csv(path, infer_schema=False), kind)
    assert keys == [b"C1" if kind is Kind.COMPLAINTS else b"RR1"]
