"""One partition's exporter state: lifecycle, dedup set, counters, rejects and offset.

Each partition a shard holds has its own state directory ``STATE_DIR/<topic>-<partition>/``
with the exporter's usual checkpoints (``exporters.state``): the partition's next offset
is stored in the same checkpoint as the state it produced, as the position of a source
named ``kafka:<topic>/<partition>``, so the two are written together or not at all.

Built on the file ``Ingestor``'s books (``exporters.books``): the folder tailer is
replaced by the partition's offset, the position the books carry as an opaque token,
and each poll's validated records are applied as one set.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from exporters import catalog as cat
from exporters.ingest import IngestConfig, Ingestor
from exporters.reference import reload
from exporters.state import StateDirLock
from exporters.tail import FileState
from kpi.contract import Kind, RejectReason
from kpi.sources.files import RawBatch, reject
from kpi.sources.folder import validated
from kpi.sources.validate import REJECT_SCHEMA, ROW, SOURCE
from kpi.streams.messages import source_name

log = logging.getLogger(__name__)

#: ``FileState.fmt`` of a partition's position (offset = the next offset to read).
KAFKA_FMT: Final = "kafka"


@dataclass(frozen=True)
class PartitionId:
    """A topic partition and what its messages hold."""

    topic: str
    partition: int
    kind: Kind

    @property
    def key(self) -> str:
        """``<topic>-<partition>``: the name of its state directory."""
        return f"{self.topic}-{self.partition}"

    @property
    def source(self) -> str:
        """The ``source`` of its rejects and of its position in the checkpoint."""
        return source_name(self.topic, self.partition)


@dataclass
class Validated:
    """A partition's share of a poll, validated: good rows and every reject."""

    good: pl.DataFrame
    bad: pl.DataFrame


def validate_poll(batch: RawBatch, kind: Kind) -> dict[str, Validated]:
    """Validate a poll's raw rows once and split them by source (partition).

    Validation has a fixed cost per call far above its cost per row, so a poll spread
    over many partitions is validated in one go rather than once per partition.
    """
    good_lazy, bad_lazy = validated(batch, kind)
    good, bad = pl.collect_all([good_lazy, bad_lazy])
    bad = pl.concat([batch.rejects_frame(), bad], how="vertical_relaxed")
    goods = good.partition_by(SOURCE, as_dict=True, maintain_order=True)
    bads = bad.partition_by("source", as_dict=True, maintain_order=True)
    out: dict[str, Validated] = {}
    for (source,) in {*goods, *bads}:
        out[str(source)] = Validated(
            good=goods.get((source,), good.clear()), bad=bads.get((source,), bad.clear())
        )
    return out


class _Positions:
    """Stands in for the file tailer: the partition's position (the books' opaque token)."""

    def __init__(self, files: dict[str, FileState]) -> None:
        self.files = files


class PartitionState(Ingestor):
    """The exporter books of one partition, restored from its last checkpoint."""

    def __init__(
        self,
        pid: PartitionId,
        data_dir: Path,
        state_root: Path,
        retention: dt.timedelta | None,
    ) -> None:
        self.pid = pid
        state_dir = state_root / pid.key
        self.dir_lock = StateDirLock(state_dir)
        self.dir_lock.acquire()  # RuntimeError while another shard still holds it
        try:
            super().__init__(IngestConfig(data_dir, state_dir, retention=retention))
        except BaseException:
            self.dir_lock.release()
            raise
        self.tailer = _Positions(self.tailer.files)  # type: ignore[assignment]

    @property
    def next_offset(self) -> int | None:
        """The first offset not yet applied (None: nothing applied since the beginning)."""
        state = self.tailer.files.get(self.pid.source)
        return None if state is None else state.offset

    def apply(self, share: Validated, next_offset: int) -> int:
        """Apply one poll's validated records as one set; the position moves to ``next_offset``.

        Returns the rows handled. Records that cannot be applied are one reject, and the
        partition moves on (a poison message never stops its partition).
        """
        self.reference = reload(self.config.data_dir, self.reference)
        intake = self.books.intake()
        if share.good.height:
            try:
                self._add_rows(intake, self.pid.kind, share.good.sort(ROW))
            except Exception as exc:
                log.exception("cannot apply a poll of %s; rejecting it", self.pid.source)
                whole = reject(
                    self.pid.source, None, RejectReason.MALFORMED_ROW, f"cannot apply: {exc}"
                )
                intake.add_rejects(pl.DataFrame([whole], schema=REJECT_SCHEMA))
        intake.add_rejects(share.bad)
        self.tailer.files[self.pid.source] = FileState(
            key=self.pid.source,
            path=self.pid.source,
            kind=self.pid.kind.value,
            fmt=KAFKA_FMT,
            offset=next_offset,
        )
        self._apply(intake)
        with self.lock:
            self.local.add(cat.EXPORTER_LATE_EVENTS, (), intake.late_events)
        return int(intake.rows)

    def close(self) -> None:
        """Close the rejects file and free the state directory for another shard."""
        super().close()
        self.dir_lock.release()
