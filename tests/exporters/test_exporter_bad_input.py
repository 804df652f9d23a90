"""Bad input never stops the exporter process: rejects are counted by reason, good rows count."""

from __future__ import annotations

import json
import random
from pathlib import Path

from exporters import catalog as cat
from exporters.state import latest_checkpoint
from tests.exporterkit import (
    ExporterProcess,
    Feed,
    append_jsonl,
    fetch,
    jsonl_bytes,
    total,
    wait_until,
    write_parquet_atomic,
)

FEED = Feed()
TEN_MB = 10 * 1024 * 1024


def test_bad_files_and_rows_are_rejected_and_the_process_keeps_running(tmp_path: Path) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    events = data / "events"
    good = FEED.lifecycle(1)  # 6 distinct scans
    mixed = events / "mixed.jsonl"
    mixed.parent.mkdir(parents=True)
    mixed.write_bytes(
        jsonl_bytes(good[:3])
        + b"{not json\n"  # row 4
        + b"[1, 2]\n"  # row 5: valid JSON, not an object
        + b'{"event_id": "x1", "item_id": "I", "event": "arrived"}\n'  # row 6: no ts
    )
    write_parquet_atomic(events / "whole.parquet", FEED.lifecycle(2))
    whole = (events / "whole.parquet").read_bytes()
    (events / "truncated.parquet").write_bytes(whole[: len(whole) // 2])
    rng = random.Random(5)
    (events / "binary.csv").write_bytes(bytes(rng.randrange(256) for _ in range(50_000)) + b"\x00")
    (events / "huge.jsonl").write_bytes(
        jsonl_bytes(good[3:4])
        + b'{"event_id": "'
        + b"x" * TEN_MB
        + b'"}\n'
        + jsonl_bytes(good[4:5])
    )
    # a 10 MB line whose writer never finishes it (no newline)
    (events / "open.jsonl").write_bytes(b'{"event_id": "' + b"y" * TEN_MB)
    complaints = data / "complaints"
    complaints.mkdir()
    (complaints / "crm.csv").write_text(
        "complaint_id,opened_at,category,region\n"
        "C1,2027-01-11T08:00:00+08:00,delay,CN-SH\n"
        "C2,2027-01-11T09:00:00+08:00,teleportation,CN-SH\n"
    )

    exporter = ExporterProcess(
        data, state, ["--refresh-interval", "0.3s", "--batch-interval", "0.1s"]
    )
    exporter.start()
    try:
        exporter.wait_ready()
        samples = exporter.scrape()
        assert samples is not None
        rejected = cat.EXPORTER_EVENTS_REJECTED.series

        def reason(
            name: str, current: dict[tuple[str, tuple[tuple[str, str], ...]], float]
        ) -> float:
            return total(current, rejected, reason=name)

        assert reason("malformed_row", samples) == 2
        assert reason("missing_field", samples) == 1
        assert reason("unreadable_file", samples) == 2  # truncated Parquet, binary CSV
        assert reason("line_too_long", samples) == 2  # the finished and the unfinished 10 MB line
        assert reason("unknown_category", samples) == 1
        assert total(samples, rejected) == 8
        # good rows of the same files still count: 3 + 2 + the whole Parquet + 1 complaint
        ingested = total(samples, cat.EXPORTER_EVENTS_INGESTED.series)
        assert ingested == 3 + 2 + len(FEED.lifecycle(2)) + 1
        assert total(samples, cat.ITEMS_ACCEPTED.series) == 2

        # more bad input while running: still counted, still alive
        with mixed.open("ab") as fh:
            fh.write(b"\xff\xfe garbage\n")
        append_jsonl(mixed, good[5:6])

        def caught_up() -> bool:
            current = exporter.scrape()
            return (
                current is not None
                and reason("malformed_row", current) == 3
                and (total(current, cat.EXPORTER_EVENTS_INGESTED.series) == ingested + 1)
            )

        wait_until(caught_up, timeout=30)
        assert exporter.alive()
        assert fetch(exporter.url + "/healthz")[0] == 200
        final = exporter.scrape()
    finally:
        assert exporter.terminate() == 0

    # SIGTERM wrote a final checkpoint holding exactly what was served last
    ckpt = latest_checkpoint(state)
    assert ckpt is not None and final is not None
    served = total(final, cat.EXPORTER_EVENTS_INGESTED.series)
    assert ckpt.counters.value(cat.EXPORTER_EVENTS_INGESTED) == served == ingested + 1
    rejects = [json.loads(line) for line in (state / "rejects.jsonl").read_text().splitlines()]
    where = {(r["source"], r["row"], r["reason"]) for r in rejects}
    assert ("events/mixed.jsonl", 4, "malformed_row") in where
    assert ("events/mixed.jsonl", 6, "missing_field") in where
    assert ("events/mixed.jsonl", 7, "malformed_row") in where
    assert ("events/truncated.parquet", None, "unreadable_file") in where
    assert ("events/binary.csv", None, "unreadable_file") in where
    assert ("events/huge.jsonl", 2, "line_too_long") in where
    assert ("events/open.jsonl", 1, "line_too_long") in where
    assert ("complaints/crm.csv", 2, "unknown_category") in where
    assert len(rejects) == 9
