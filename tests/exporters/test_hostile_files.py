"""A hostile environment (issue 18): reused inodes, copytruncate, CSV headers changing, unreadable files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from exporters import catalog as cat
from tests.exporterkit import (
    ExporterProcess,
    Feed,
    append_jsonl,
    total,
    wait_until,
    write_parquet_atomic,
)
from tests.exporters.hostile import (
    FAST,
    engine_counts,
    exporter_counts,
    lines,
    read_all,
    readyz,
    start,
)

# --- 2. inode reuse ---------------------------------------------------------------------


def test_new_parquet_on_the_inode_of_a_deleted_jsonl_is_read(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    events = data / "events"
    feed = Feed()
    append_jsonl(events / "a.jsonl", feed.interleaved(0, 5))
    exporter = start(running, data, state)
    read_all(exporter, lines(events / "a.jsonl"))
    assert exporter.terminate() == 0
    rows_a = lines(events / "a.jsonl")
    (events / "a.jsonl").unlink()
    write_parquet_atomic(events / "b.parquet", feed.interleaved(5, 20))
    # ext4 hands the freed inode to the next file: make the checkpoint say so, exactly
    # as a restart after a real reuse finds it.
    (ckpt,) = state.glob("checkpoint-*")
    meta = json.loads((ckpt / "meta.json").read_text())
    st = (events / "b.parquet").stat()
    (entry,) = meta["files"]
    entry["key"] = f"{st.st_dev}:{st.st_ino}"
    (ckpt / "meta.json").write_text(json.dumps(meta))

    exporter = start(running, data, state)
    final = read_all(exporter, rows_a + len(feed.interleaved(5, 20)))
    assert total(final, cat.EXPORTER_EVENTS_REJECTED.series) == 0
    # the engine reads b.parquet only (a.jsonl is gone): its items plus what a.jsonl gave
    expected = engine_counts(data)
    assert exporter_counts(final)["ingested"] == expected["ingested"] + rows_a
    assert total(final, cat.ITEMS_ACCEPTED.series) == 25
    assert "now named events/b.parquet" not in exporter.log()
    assert exporter.terminate() == 0


# --- 3. copytruncate ------------------------------------------------------------------


def test_copytruncate_loses_nothing_written_before_the_truncation(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data = tmp_path / "data"
    events = data / "events"
    events.mkdir(parents=True)
    live = events / "live.jsonl"
    reference = tmp_path / "reference"  # every line written, in one file the engine reads
    (reference / "events").mkdir(parents=True)
    everything = reference / "events" / "all.jsonl"
    feed = Feed()
    rows = feed.interleaved(0, 240)
    step = len(rows) // 8

    def write(part: list[dict[str, str | None]]) -> None:
        append_jsonl(live, part)
        append_jsonl(everything, part)

    write(rows[:1])
    exporter = start(running, data, tmp_path / "state")
    done = 1
    for k in range(4):
        # read up to here, then lines the exporter has not polled yet, then the rotation
        write(rows[done : done + step])
        done += step
        read_all(exporter, done)
        write(rows[done : done + step])
        done += step
        for n in range(k, 0, -1):  # logrotate: live.jsonl.1 -> .2 ..., copy, truncate
            (events / f"live.jsonl.{n}").rename(events / f"live.jsonl.{n + 1}")
        shutil.copyfile(live, events / "live.jsonl.1")
        with live.open("r+b") as fh:
            fh.truncate(0)
    write(rows[done:])
    final = read_all(exporter, len(rows))
    # Nothing lost, nothing read twice (a line read again would be a duplicate reject).
    assert total(final, cat.EXPORTER_EVENTS_REJECTED.series) == 0
    assert exporter_counts(final) == engine_counts(reference)
    assert exporter.terminate() == 0


# --- 6. a CSV header that changes mid-file ----------------------------------------------


def test_csv_header_change_mid_file_is_followed(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data = tmp_path / "data"
    feed = Feed()
    first, second = feed.interleaved(0, 15), feed.interleaved(15, 15)
    cols_a = ["event_id", "item_id", "event", "ts", "facility", "product", "origin"]
    cols_a += ["destination", "promised_by", "reason"]
    cols_b = ["item_id", "event_id", *cols_a[2:]]  # two columns swapped, same width

    def csv_lines(cols: list[str], rows: list[dict[str, str | None]]) -> str:
        return "".join(",".join(r[c] or "" for c in cols) + "\n" for r in rows)

    feed_csv = data / "events" / "feed.csv"
    feed_csv.parent.mkdir(parents=True)
    feed_csv.write_text(",".join(cols_a) + "\n" + csv_lines(cols_a, first))
    exporter = start(running, data, tmp_path / "state")
    read_all(exporter, len(first))
    with feed_csv.open("a") as fh:
        fh.write(",".join(cols_b) + "\n" + csv_lines(cols_b, second))
    final = read_all(exporter, len(first) + len(second))
    assert total(final, cat.EXPORTER_EVENTS_REJECTED.series) == 0
    # the same rows as JSON lines, where there is no header to get wrong
    reference = tmp_path / "reference"
    append_jsonl(reference / "events" / "all.jsonl", first + second)
    expected = engine_counts(reference)
    assert exporter_counts(final) == expected == engine_counts(data)
    assert exporter.log().count("CSV header changes") == 1
    assert exporter.terminate() == 0


# --- 10. unreadable folder and files -------------------------------------------------------


def without_dac_override() -> list[str]:
    """Root reads mode-000 files: drop that capability (setpriv), as an unprivileged user has none."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


API_READYZ = """
import json, sys
from fastapi.testclient import TestClient
from kpi.api.app import create_app
from kpi.api.settings import Settings
with TestClient(create_app(Settings(data_dir=sys.argv[1]))) as client:
    print(json.dumps(client.get("/readyz").json()))
"""


def test_unreadable_files_and_folder_are_reported_and_not_reread(
    tmp_path: Path, running: list[ExporterProcess]
) -> None:
    data, state = tmp_path / "data", tmp_path / "state"
    events = data / "events"
    feed = Feed()
    append_jsonl(events / "a.jsonl", feed.interleaved(0, 10))
    secret = events / "secret.jsonl"
    append_jsonl(secret, feed.interleaved(10, 5))
    secret.chmod(0)
    exporter = ExporterProcess(data, state, FAST, prefix=without_dac_override()).start()
    running.append(exporter)
    wait_until(lambda: "secret.jsonl" in readyz(exporter)[1], timeout=30)
    time.sleep(1.0)  # ten polls
    status, body = readyz(exporter)
    assert status == 503 and "cannot read events/secret.jsonl" in body
    assert exporter.log().count("cannot read events/secret.jsonl") == 1  # warned once

    # the API's /readyz says so too (run with the same privileges)
    api = subprocess.run(
        [*without_dac_override(), sys.executable, "-c", API_READYZ, str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert api.returncode == 0, api.stderr
    answer = json.loads(api.stdout.strip().splitlines()[-1])
    assert any("events/secret.jsonl" in u for u in answer["unreadable"]), answer

    secret.chmod(0o644)
    read_all(exporter, lines(events / "a.jsonl") + lines(secret))
    assert readyz(exporter)[0] == 200

    # an unlistable events/ folder across a restart: nothing is re-read afterwards
    events.chmod(0)
    wait_until(lambda: "cannot read events/" in readyz(exporter)[1], timeout=10)
    exporter.kill()
    exporter = ExporterProcess(data, state, FAST, prefix=without_dac_override()).start()
    running.append(exporter)
    wait_until(lambda: "cannot read events/" in readyz(exporter)[1], timeout=30)
    time.sleep(0.6)
    events.chmod(0o755)
    final = read_all(exporter, lines(events / "a.jsonl") + lines(secret))
    assert total(final, cat.EXPORTER_EVENTS_REJECTED.series, reason="duplicate") == 0
    assert exporter_counts(final) == engine_counts(data)
    assert exporter.terminate() == 0
