"""Fork-server preload for ``scripts/mutants.py``: the engine imported, polars' pool not started.

Copied into each scratch copy as ``tests/_mutants_preload.py`` and imported once by
mutmut's fork server (``forkserver_warmup = "import"``), so that a mutant's process
only runs its tests instead of importing ``kpi`` again (seconds per mutant on a
loaded machine). Importing ``kpi.standards`` checks the default time zone with a
polars call, which starts polars' thread pool; a pool started in the fork server
does not exist in the forked children, and their first parallel polars call waits
for ever. So ``pl.Series`` is a stand-in for the length of that import only (the
default zone is a constant the tests check anyway); the children start their own pool.
Imported from ``mutants/`` (mutmut puts it first on ``sys.path``): the mutated code.
"""

from __future__ import annotations

from typing import Any

import polars as pl


class _NoCheck:
    """Stands in for ``pl.Series`` while ``kpi.standards`` checks its default zone."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.dt = self

    def replace_time_zone(self, *args: Any, **kwargs: Any) -> None:
        return None


_series = pl.Series
pl.Series = _NoCheck  # type: ignore[misc,assignment]
try:
    import kpi.standards
finally:
    pl.Series = _series  # type: ignore[misc]

import kpi.kpis.functions  # noqa: E402
import kpi.kpis.increments  # noqa: E402
import kpi.kpis.query  # noqa: E402
import kpi.lifecycle  # noqa: E402, F401
import tests.conftest  # noqa: E402
import tests.kpi.conftest  # noqa: E402, F401
