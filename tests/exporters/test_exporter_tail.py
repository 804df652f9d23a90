"""File following: partial lines, CSV headers, rotation, truncation, binary and over-long input."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import multiprocessing
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from exporters.tail import FileState, Poll, Tailer
from exporters.tail_files import Entry, MovedError
from kpi.sources.files import MAX_LINE_BYTES
from tests.exporterkit import event, jsonl_bytes, write_parquet_atomic

T0 = dt.datetime(2027, 1, 11, tzinfo=dt.UTC)


def rows(n: int, prefix: str = "e") -> list[dict[str, str | None]]:
    return [
        event(f"{prefix}{i}", f"I{i}", "arrived", T0 + dt.timedelta(minutes=i)) for i in range(n)
    ]


def taken(poll: Poll) -> list[tuple[str, int, str]]:
    """(source, row, event_id) of every parsed row, in apply order."""
    out: list[tuple[str, int, str]] = []
    for chunk in poll.chunks:
        frame = chunk.batch.frame.collect()
        if "event_id" in frame.columns:
            out += list(frame.select("_source", "_row", "event_id").iter_rows())
    return out


def rejects(poll: Poll) -> list[tuple[str, int | None, str]]:
    return [
        (str(r["source"]), r["row"], str(r["reason"]))  # type: ignore[misc]
        for c in poll.chunks
        for r in c.batch.rejects
    ]


def step(tailer: Tailer) -> Poll:
    poll = tailer.poll()
    tailer.commit(poll.chunks)
    return poll


def live_read(root: Path, n: int) -> tuple[Path, Path, Tailer]:
    """``events/live.jsonl`` with ``n`` lines (a0, a1, ...), read once by a new tailer."""
    events = root / "events"
    events.mkdir()
    live = events / "live.jsonl"
    live.write_bytes(jsonl_bytes(rows(n, "a")))
    tailer = Tailer(root)
    assert [r[2] for r in taken(step(tailer))] == [f"a{i}" for i in range(n)]
    return events, live, tailer


def hide_from_listings(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Names the tailer's fresh listings miss while in the returned set (a racing readdir)."""
    listing = Tailer._fresh_listing
    hidden: set[str] = set()
    monkeypatch.setattr(
        Tailer,
        "_fresh_listing",
        lambda self, kind: [e for e in listing(self, kind) if e.rel not in hidden],
    )
    return hidden


def test_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "events" / "live.jsonl"
    path.parent.mkdir()
    data = jsonl_bytes(rows(3))
    cut = data.rfind(b"\n", 0, len(data) - 1) + 10  # inside the third line
    path.write_bytes(data[:cut])
    tailer = Tailer(tmp_path)
    assert [r[2] for r in taken(step(tailer))] == ["e0", "e1"]
    assert taken(step(tailer)) == []
    with path.open("ab") as fh:
        fh.write(data[cut:])
    assert taken(step(tailer)) == [("events/live.jsonl", 3, "e2")]


def test_uncommitted_chunks_are_read_again(tmp_path: Path) -> None:
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "a.jsonl").write_bytes(jsonl_bytes(rows(2)))
    tailer = Tailer(tmp_path)
    first = tailer.poll()
    assert [r[2] for r in taken(first)] == ["e0", "e1"]
    assert [r[2] for r in taken(tailer.poll())] == ["e0", "e1"]  # not committed: same rows
    tailer.commit(first.chunks)
    assert taken(tailer.poll()) == []


def test_csv_header_is_kept_for_appended_rows(tmp_path: Path) -> None:
    path = tmp_path / "events" / "feed.csv"
    path.parent.mkdir()
    path.write_text("event_id,item_id,event,ts,facility\ne1,I1,arrived,2027-01-11T00:00:00Z,F1\n")
    tailer = Tailer(tmp_path)
    assert taken(step(tailer)) == [("events/feed.csv", 1, "e1")]
    with path.open("a") as fh:
        fh.write("e2,I2,departed,2027-01-11T01:00:00Z,F1\ne3,I3,arrived,2027-01-11T02:00:00Z,F2\n")
    poll = step(tailer)
    assert taken(poll) == [("events/feed.csv", 2, "e2"), ("events/feed.csv", 3, "e3")]
    frame = poll.chunks[0].batch.frame.collect()
    assert frame["facility"].to_list() == ["F1", "F2"]


def test_rotated_file_keeps_its_position_and_its_tail_comes_first(tmp_path: Path) -> None:
    events, live, tailer = live_read(tmp_path, 2)
    with live.open("ab") as fh:  # written just before the rotation
        fh.write(jsonl_bytes(rows(1, "b")))
    os.rename(live, events / "live.jsonl.1")  # a name the reader would not pick up itself
    live.write_bytes(jsonl_bytes(rows(1, "c")))
    assert taken(step(tailer)) == [("events/live.jsonl.1", 3, "b0"), ("events/live.jsonl", 1, "c0")]
    assert taken(step(tailer)) == []


def test_truncated_file_is_read_again_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "events" / "x.jsonl"
    path.parent.mkdir()
    path.write_bytes(jsonl_bytes(rows(3, "a")))
    tailer = Tailer(tmp_path)
    assert len(taken(step(tailer))) == 3
    path.write_bytes(jsonl_bytes(rows(1, "b")))  # truncate + rewrite, same inode
    assert taken(step(tailer)) == [("events/x.jsonl", 1, "b0")]


def test_file_rewritten_in_place_beyond_the_old_offset_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "events" / "x.jsonl"
    path.parent.mkdir()
    path.write_bytes(jsonl_bytes(rows(2, "a")))
    tailer = Tailer(tmp_path)
    assert len(taken(step(tailer))) == 2
    with path.open("r+b") as fh:  # copytruncate then a burst of writes, between two polls
        fh.truncate(0)
        fh.write(jsonl_bytes(rows(4, "z")))
    assert [r[2] for r in taken(step(tailer))] == ["z0", "z1", "z2", "z3"]


def test_binary_csv_is_one_reject_then_ignored(tmp_path: Path) -> None:
    path = tmp_path / "events" / "blob.csv"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 40)
    tailer = Tailer(tmp_path)
    poll = step(tailer)
    assert rejects(poll) == [("events/blob.csv", None, "unreadable_file")]
    with path.open("ab") as fh:
        fh.write(b"\x00\x01more\n")
    assert step(tailer).chunks == []


def test_over_long_line_is_rejected_once_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events" / "long.jsonl"
    path.parent.mkdir()
    good = jsonl_bytes(rows(1, "a"))
    path.write_bytes(good + b'{"event_id": "' + b"x" * (MAX_LINE_BYTES + 10))  # no newline yet
    tailer = Tailer(tmp_path)
    poll = step(tailer)
    assert [r[2] for r in taken(poll)] == ["a0"]
    assert rejects(poll) == [("events/long.jsonl", 2, "line_too_long")]
    with path.open("ab") as fh:
        fh.write(b"y" * 1000 + b'"}\n' + jsonl_bytes(rows(1, "b")))
    poll = step(tailer)
    assert rejects(poll) == []
    assert taken(poll) == [("events/long.jsonl", 3, "b0")]


def test_last_line_without_newline_is_read_once_the_file_is_idle(tmp_path: Path) -> None:
    path = tmp_path / "events" / "done.jsonl"
    path.parent.mkdir()
    path.write_bytes(jsonl_bytes(rows(2)).rstrip(b"\n"))
    now = [path.stat().st_mtime + 1.0]
    tailer = Tailer(tmp_path, grace=5.0, clock=lambda: now[0])
    assert [r[2] for r in taken(step(tailer))] == ["e0"]
    now[0] += 10.0
    assert taken(step(tailer)) == [("events/done.jsonl", 2, "e1")]


def test_parquet_read_once_in_slices_and_tmp_files_ignored(tmp_path: Path) -> None:
    events = tmp_path / "events"
    write_parquet_atomic(events / "day1.parquet", rows(5))
    (events / "day2.parquet.tmp").write_bytes(b"half written")
    tailer = Tailer(tmp_path)
    first = tailer.poll(max_rows=3)
    tailer.commit(first.chunks)
    assert [r[1:] for r in taken(first)] == [(1, "e0"), (2, "e1"), (3, "e2")]
    assert first.pending
    second = step(tailer)
    assert [r[1:] for r in taken(second)] == [(4, "e3"), (5, "e4")]
    assert not second.pending
    assert step(tailer).chunks == []
    # a new version of the file (size and mtime change) is read again
    write_parquet_atomic(events / "day1.parquet", rows(6))
    assert len(taken(step(tailer))) == 6


def test_truncated_parquet_is_one_reject(tmp_path: Path) -> None:
    events = tmp_path / "events"
    write_parquet_atomic(events / "ok.parquet", rows(100))
    data = (events / "ok.parquet").read_bytes()
    (events / "broken.parquet").write_bytes(data[: len(data) // 2])
    tailer = Tailer(tmp_path)
    poll = step(tailer)
    assert rejects(poll) == [("events/broken.parquet", None, "unreadable_file")]
    assert len(taken(poll)) == 100
    assert step(tailer).chunks == []


def test_byte_budget_bounds_one_poll(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    for name in ("a.jsonl", "b.jsonl"):
        (events / name).write_bytes(jsonl_bytes(rows(2000, name[0])))
    tailer = Tailer(tmp_path)
    poll = tailer.poll(max_bytes=10)
    tailer.commit(poll.chunks)
    # at least one line's worth is read (the minimum read), the rest waits
    assert poll.pending and len(poll.chunks) == 1
    total = len(taken(poll))
    while True:
        poll = step(tailer)
        if not poll.chunks:
            break
        total += len(taken(poll))
    assert total == 4000


def test_removed_file_is_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "events" / "a.jsonl"
    path.parent.mkdir()
    path.write_bytes(jsonl_bytes(rows(1)))
    tailer = Tailer(tmp_path)
    step(tailer)
    assert len(tailer.files) == 1
    path.unlink()
    step(tailer)
    step(tailer)
    assert len(tailer.files) == 1  # maybe caught mid-rename: kept for a while
    step(tailer)
    assert tailer.files == {}


def test_new_file_on_a_reused_inode_is_a_new_file(tmp_path: Path) -> None:
    """A checkpoint says this inode was ``a.jsonl``; it now holds ``b.parquet`` (inode reuse)."""
    events = tmp_path / "events"
    events.mkdir()
    (events / "a.jsonl").write_bytes(jsonl_bytes(rows(3, "a")))
    first = Tailer(tmp_path)
    step(first)
    (old,) = first.files.values()
    (events / "a.jsonl").unlink()
    write_parquet_atomic(events / "b.parquet", rows(4, "b"))
    st = (events / "b.parquet").stat()
    key = f"{st.st_dev}:{st.st_ino}"
    reused = dataclasses.replace(old, key=key)  # what ext4 does when it hands the inode out again
    tailer = Tailer(tmp_path, {key: reused})
    poll = step(tailer)
    assert rejects(poll) == []
    assert [r[1:] for r in taken(poll)] == [(i + 1, f"b{i}") for i in range(4)]
    assert tailer.files[key].fmt == "parquet"
    # and a text file on a text file's inode, with other first bytes, is read from 0
    (events / "b.parquet").unlink()
    (events / "c.jsonl").write_bytes(jsonl_bytes(rows(5, "c")))
    st = (events / "c.jsonl").stat()
    key = f"{st.st_dev}:{st.st_ino}"
    tailer = Tailer(tmp_path, {key: dataclasses.replace(old, key=key)})
    assert [r[2] for r in taken(step(tailer))] == [f"c{i}" for i in range(5)]


def test_copytruncate_reads_the_copy_tail_then_the_original_from_zero(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    live = events / "live.jsonl"
    live.write_bytes(jsonl_bytes(rows(3, "a")))
    tailer = Tailer(tmp_path)
    assert len(taken(step(tailer))) == 3
    with live.open("ab") as fh:  # written after the last poll, before the rotation
        fh.write(jsonl_bytes(rows(2, "b")))
    shutil.copyfile(live, events / "live.jsonl.1")  # logrotate copytruncate: copy...
    with live.open("r+b") as fh:  # ... then truncate, and the writer goes on
        fh.truncate(0)
    live.write_bytes(jsonl_bytes(rows(1, "c")))
    assert taken(step(tailer)) == [
        ("events/live.jsonl.1", 4, "b0"),
        ("events/live.jsonl.1", 5, "b1"),
        ("events/live.jsonl", 1, "c0"),
    ]
    assert taken(step(tailer)) == []


def test_copy_under_a_readable_name_is_not_read_twice(tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    live = events / "live.jsonl"
    live.write_bytes(jsonl_bytes(rows(3, "a")))
    tailer = Tailer(tmp_path)
    step(tailer)
    with live.open("ab") as fh:
        fh.write(jsonl_bytes(rows(1, "b")))
    shutil.copyfile(live, events / "live-1.jsonl")
    live.write_bytes(b"")  # truncated, nothing new yet
    assert taken(step(tailer)) == [("events/live-1.jsonl", 4, "b0")]
    live.write_bytes(jsonl_bytes(rows(1, "c")))
    assert taken(step(tailer)) == [("events/live.jsonl", 1, "c0")]
    assert taken(step(tailer)) == []


def _rotate(events: Path, generations: int) -> None:
    """logrotate ``copytruncate``: live.jsonl.N -> N+1 ..., copy to live.jsonl.1, truncate."""
    for n in range(generations, 0, -1):
        (events / f"live.jsonl.{n}").rename(events / f"live.jsonl.{n + 1}")
    shutil.copyfile(events / "live.jsonl", events / "live.jsonl.1")
    with (events / "live.jsonl").open("r+b") as fh:
        fh.truncate(0)


def test_two_rotations_between_polls_lose_nothing_and_read_nothing_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = tmp_path / "events"
    events.mkdir()
    live = events / "live.jsonl"
    old = events / "live.jsonl.1"
    old.write_bytes(jsonl_bytes(rows(2, "old")))  # rotated before the exporter ever ran
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    live.write_bytes(jsonl_bytes(rows(3, "a")))
    tailer = Tailer(tmp_path)
    assert [r[2] for r in taken(step(tailer))] == ["a0", "a1", "a2"]
    with live.open("ab") as fh:  # unread, then rotated (live.jsonl.1 -> .2)
        fh.write(jsonl_bytes(rows(2, "b")))
    _rotate(events, 1)
    live.write_bytes(jsonl_bytes(rows(2, "c")))  # a whole generation never polled
    _rotate(events, 2)
    live.write_bytes(jsonl_bytes(rows(1, "d")))
    with caplog.at_level("WARNING", logger="exporters.tail"):
        got = taken(step(tailer))
    assert sorted(r[2] for r in got) == ["b0", "b1", "c0", "c1", "d0"]
    assert (
        "events/live.jsonl was truncated; reading the rest of its copy events/live.jsonl.2"
        " and the generations events/live.jsonl.1 whole, then it from the start"
    ) in caplog.messages
    assert ("events/live.jsonl.2", 4, "b0") in got  # the copy's tail, at its line numbers
    assert taken(step(tailer)) == []
    with live.open("ab") as fh:
        fh.write(jsonl_bytes(rows(1, "e")))
    _rotate(events, 3)
    assert [r[2] for r in taken(step(tailer))] == ["e0"]
    assert taken(step(tailer)) == []


@pytest.mark.parametrize("restart", [False, True])
def test_a_copy_missed_by_one_listing_is_read_from_where_reading_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restart: bool
) -> None:
    """A listing taken during a cascade of renames may miss the copy: the next one finds it.

    Before the fix the copy's unread tail (b0, b1) was lost and the copy was then read
    whole as a rotated generation (a0..a2 twice), about one CI run in ten.
    """
    events, live, tailer = live_read(tmp_path, 3)
    with live.open("ab") as fh:  # unread when rotated
        fh.write(jsonl_bytes(rows(2, "b")))
    _rotate(events, 0)
    hidden = hide_from_listings(monkeypatch)
    hidden.add("events/live.jsonl.1")
    assert taken(step(tailer)) == []
    if restart:  # the checkpoint keeps what the inode held
        saved = {k: json.loads(json.dumps(f.to_json())) for k, f in tailer.files.items()}
        tailer = Tailer(tmp_path, {k: FileState.from_json(v) for k, v in saved.items()})
    hidden.clear()
    with live.open("ab") as fh:
        fh.write(jsonl_bytes(rows(2, "c")))
    got = taken(step(tailer)) + taken(step(tailer))
    assert [r[2] for r in got] == ["b0", "b1", "c0", "c1"]
    assert ("events/live.jsonl.1", 4, "b0") in got  # the copy's tail, at its line numbers
    with live.open("ab") as fh:
        fh.write(jsonl_bytes(rows(1, "d")))
    assert [r[2] for r in taken(step(tailer))] == ["d0"]


def test_copies_missed_by_the_listings_of_two_rotations_are_both_read_from_their_positions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two rotations, each copy missed by the listing that saw its truncation."""
    events, live, tailer = live_read(tmp_path, 3)
    hidden = hide_from_listings(monkeypatch)
    with live.open("ab") as fh:
        fh.write(jsonl_bytes(rows(2, "b")))
    _rotate(events, 0)  # a0..b1 -> live.jsonl.1
    hidden |= {"events/live.jsonl.1"}
    assert taken(step(tailer)) == []
    live.write_bytes(jsonl_bytes(rows(2, "c")))
    assert [r[2] for r in taken(step(tailer))] == ["c0", "c1"]
    with live.open("ab") as fh:
        fh.write(jsonl_bytes(rows(1, "d")))
    _rotate(events, 1)  # a0..b1 -> live.jsonl.2, c0..d0 -> live.jsonl.1
    hidden |= {"events/live.jsonl.2", "events/live.jsonl.1"}
    assert taken(step(tailer)) == []
    hidden.clear()
    with live.open("ab") as fh:
        fh.write(jsonl_bytes(rows(1, "e")))
    got = [r[2] for r in taken(step(tailer)) + taken(step(tailer))]
    assert sorted(got) == ["b0", "b1", "d0", "e0"]


def test_a_copy_found_in_a_poll_that_is_dropped_is_found_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll drops a file's group when a file moves under it: the copy it had found is
    still the copy at the next poll (read from its position, not whole)."""
    events, live, tailer = live_read(tmp_path, 3)
    with live.open("ab") as fh:
        fh.write(jsonl_bytes(rows(2, "b")))
    _rotate(events, 0)
    hidden = hide_from_listings(monkeypatch)
    hidden.add("events/live.jsonl.1")
    assert taken(step(tailer)) == []
    hidden.clear()
    with live.open("ab") as fh:
        fh.write(jsonl_bytes(rows(2, "c")))
    read = Tailer._read
    moved: list[str] = []

    def moves_once(self: Tailer, state: FileState, entry: Entry, *args: Any) -> None:
        if not moved:
            moved.append(entry.rel)
            raise MovedError(entry.rel)
        read(self, state, entry, *args)

    monkeypatch.setattr(Tailer, "_read", moves_once)
    assert taken(step(tailer)) == [] and moved == ["events/live.jsonl.1"]
    got = taken(step(tailer)) + taken(step(tailer)) + taken(step(tailer))
    assert sorted(r[2] for r in got) == ["b0", "b1", "c0", "c1"]


def test_a_copy_missed_while_a_later_generation_is_found_is_still_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The listing misses the copy of what was read but shows a later generation."""
    events, live, tailer = live_read(tmp_path, 3)
    with live.open("ab") as fh:
        fh.write(jsonl_bytes(rows(2, "b")))
    _rotate(events, 0)  # a0..b1 -> live.jsonl.1
    live.write_bytes(jsonl_bytes(rows(2, "c")))
    _rotate(events, 1)  # a0..b1 -> live.jsonl.2, c0, c1 -> live.jsonl.1
    hidden = hide_from_listings(monkeypatch)
    hidden.add("events/live.jsonl.2")
    with caplog.at_level("WARNING", logger="exporters.tail"):
        assert [r[2] for r in taken(step(tailer))] == ["c0", "c1"]  # a generation never read
    assert any(
        m.endswith("reading the generations events/live.jsonl.1 whole, then it from the start")
        for m in caplog.messages
    )
    assert not any("its copy" in m for m in caplog.messages)
    hidden.clear()
    with live.open("ab") as fh:
        fh.write(jsonl_bytes(rows(1, "d")))
    got = taken(step(tailer)) + taken(step(tailer))
    assert sorted(r[2] for r in got) == ["b0", "b1", "d0"]


def test_a_copy_made_but_not_yet_truncated_is_not_read_beside_its_original(
    tmp_path: Path,
) -> None:
    """logrotate copies, then truncates: a poll in between reads the new lines once."""
    events, live, tailer = live_read(tmp_path, 2)
    with live.open("ab") as fh:
        fh.write(jsonl_bytes(rows(2, "b")))
    shutil.copyfile(live, events / "live.jsonl.1")
    assert taken(step(tailer)) == [
        ("events/live.jsonl", 3, "b0"),
        ("events/live.jsonl", 4, "b1"),
    ]
    with live.open("r+b") as fh:
        fh.truncate(0)
    assert taken(step(tailer)) == []
    with live.open("ab") as fh:
        fh.write(jsonl_bytes(rows(1, "c")))
    assert [r[2] for r in taken(step(tailer))] == ["c0"]
    assert taken(step(tailer)) == []


def rotating_writer(events: Path, rotations: int, seed: int) -> None:
    """Appends generations and rotates (``copytruncate``) every few ms; also for the stress script."""
    rnd = random.Random(seed)
    gen = done = 0
    for _ in range(rotations):
        for _ in range(rnd.randint(1, 3)):
            with (events / "live.jsonl").open("ab") as fh:
                fh.write(jsonl_bytes(rows(5, f"g{gen}-")))
            gen += 1
            time.sleep(rnd.random() * 0.005)
        for _ in range(rnd.choice((1, 1, 2))):  # sometimes twice in a row
            _rotate(events, done)
            done += 1
    with (events / "live.jsonl").open("ab") as fh:
        fh.write(jsonl_bytes(rows(5, f"g{gen}-")))
    (events / "generations").write_text(str(gen + 1))


def test_rotations_racing_the_polls_lose_nothing_and_read_nothing_twice(tmp_path: Path) -> None:
    """Another process rotates every few ms while the tailer polls: every line read once."""
    for seed in range(2):
        root = tmp_path / str(seed)
        events = root / "events"
        events.mkdir(parents=True)
        (events / "live.jsonl").write_bytes(b"")
        tailer = Tailer(root)
        ctx = multiprocessing.get_context("spawn")
        writer = ctx.Process(target=rotating_writer, args=(events, 20, seed))
        writer.start()
        seen: collections.Counter[str] = collections.Counter()
        while writer.is_alive():
            seen.update(r[2] for r in taken(step(tailer)))
            time.sleep(0.002)
        writer.join()
        assert writer.exitcode == 0
        for _ in range(3):
            seen.update(r[2] for r in taken(step(tailer)))
        gens = int((events / "generations").read_text())
        written = {f"g{g}-{i}" for g in range(gens) for i in range(5)}
        assert set(seen) == written, (len(written - set(seen)), "lost")
        assert max(seen.values()) == 1, "read twice"
