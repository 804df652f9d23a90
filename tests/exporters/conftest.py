"""Fixtures of the exporter tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.exporterkit import ExporterProcess


@pytest.fixture
def running() -> Iterator[list[ExporterProcess]]:
    """Exporters started by a test; terminated (or killed) at the end whatever happens."""
    started: list[ExporterProcess] = []
    yield started
    for exporter in started:
        if exporter.alive():
            exporter.kill()
