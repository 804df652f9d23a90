"""KPIs of a lake on a Dask cluster: one task per bucket, partials combined exactly.

``connect`` reaches a cluster (or starts a local one), ``report`` answers a KPI
question over a ``kpi compact`` lake with the same numbers as the single-process
engine on the folder: see ``kpi.cluster.engine`` (the run), ``kpi.cluster.partials``
(what a bucket adds) and ``kpi.cluster.combine`` (how partials combine exactly).
"""

from kpi.cluster.connect import ClusterError, connect
from kpi.cluster.engine import family_frames, report, span

__all__ = ["ClusterError", "connect", "family_frames", "report", "span"]
