"""A shard's settings: how long polls are gathered follows the refresh interval."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporters.kafka.config import ShardConfig


def _config(refresh: float, max_set: float) -> ShardConfig:
    return ShardConfig(
        Path("data"),
        Path("state"),
        "127.0.0.1:9092",
        "t",
        "g",
        refresh_interval=refresh,
        max_set_seconds=max_set,
    )


@pytest.mark.parametrize(
    ("refresh", "max_set", "expected"),
    [
        (15.0, 5.0, 5.0),  # the defaults: a third of 15 s is the 5 s cap
        (60.0, 5.0, 5.0),  # slow refreshes keep the cap
        (3.0, 5.0, 1.0),  # faster refreshes gather for a third of them
        (0.3, 5.0, 0.1),
        (3.0, 0.5, 0.5),  # a smaller cap wins
    ],
)
def test_sets_are_gathered_for_at_most_a_third_of_the_refresh(
    refresh: float, max_set: float, expected: float
) -> None:
    config = _config(refresh, max_set)
    assert config.gather_seconds() == pytest.approx(expected)
