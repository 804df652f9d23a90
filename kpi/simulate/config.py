"""The run's configuration, local time and the array types shared by the simulator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC as UTC_TZ
from datetime import datetime, timedelta, timezone
from typing import Final

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

LOCAL_TZ: Final = "Asia/Shanghai"
LOCAL_OFFSET_H: Final = 8
LOCAL_TZINFO: Final = timezone(timedelta(hours=LOCAL_OFFSET_H))
DEFAULT_START: Final = datetime(2027, 1, 11, tzinfo=LOCAL_TZINFO)
DEFAULT_DAYS: Final = 30
DEFAULT_ITEMS: Final = 100_000
SCENARIOS: Final = ("spring-festival", "steady")
DEFAULT_SCENARIO: Final = "spring-festival"


def epoch_hours(ts: datetime) -> float:
    """An instant as hours since the Unix epoch, the engine's time unit."""
    return ts.timestamp() / 3600.0


def lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> F64:
    """``n`` log-normal draws with this median (durations with a long right tail)."""
    out: F64 = median * np.exp(sigma * rng.standard_normal(n))
    return out


@dataclass(frozen=True)
class SimConfig:
    """Arguments of one generator run."""

    items: int = DEFAULT_ITEMS
    days: int = DEFAULT_DAYS
    seed: int = 0
    scenario: str = DEFAULT_SCENARIO
    start: datetime = DEFAULT_START
    bad_rows: float = 0.0

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; one of {', '.join(SCENARIOS)}")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError("start must carry a UTC offset")
        if not 1 <= self.items < 2**24:
            raise ValueError("items must be between 1 and 16,777,215")
        if not 1 <= self.days <= 366:
            raise ValueError("days must be between 1 and 366")
        if not 0.0 <= self.bad_rows <= 0.5:
            raise ValueError("bad_rows must be between 0 and 0.5")

    @property
    def end(self) -> datetime:
        """End of the data (exclusive, UTC): start + days."""
        return (self.start + timedelta(days=self.days)).astimezone(UTC_TZ)
