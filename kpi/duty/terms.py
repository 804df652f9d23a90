"""What the duty desk's callers name without its database: causes, statuses, its error.

Free of SQLAlchemy and Alembic, so the API's incidents routes import it when the API
starts and the register (``kpi.duty.register``) only when the duty desk opens.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

#: Cause categories a closed incident is filed under.
CAUSES: Final = (
    "capacity",
    "equipment",
    "transport",
    "weather",
    "staffing",
    "system",
    "data_quality",
    "false_alarm",
    "other",
)
#: ``status`` filter values: open (and its two halves), resolved, closed.
STATUSES: Final = ("open", "acknowledged", "unacknowledged", "resolved", "closed")

Episode = tuple[str, dt.datetime]


class DutyError(Exception):
    """A duty request that cannot be done as asked: HTTP-like status and a message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
