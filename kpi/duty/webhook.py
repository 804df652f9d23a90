"""Alertmanager's webhook payload (version 4), validated before anything is written."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

#: Alertmanager writes Go's zero time for "no end" (firing alerts it did not get an end for).
GO_ZERO_YEAR = 1


class WebhookAlert(BaseModel):
    """One alert of a notification: one fingerprint in one state."""

    model_config = ConfigDict(extra="ignore")
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: AwareDatetime  # noqa: N815 - Alertmanager's field names
    endsAt: AwareDatetime | None = None  # noqa: N815
    generatorURL: str = ""  # noqa: N815
    fingerprint: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{1,64}$")]

    @field_validator("startsAt", "endsAt", mode="after")
    @classmethod
    def _in_utc(cls, v: dt.datetime | None) -> dt.datetime | None:
        # SQLite keeps wall-clock text without the offset: everything is stored in UTC.
        if v is None or v.year <= GO_ZERO_YEAR:
            return v
        return v.astimezone(dt.UTC)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.labels.get("alertname"):
            raise ValueError("the alert has no alertname label")
        if self.startsAt.year <= GO_ZERO_YEAR:
            raise ValueError("startsAt is the zero time; an alert must say when it started")
        if self.status == "resolved":
            if self.ends_at is None:
                raise ValueError("a resolved alert must carry endsAt")
            if self.ends_at < self.startsAt:
                raise ValueError(f"endsAt {self.ends_at} is before startsAt {self.startsAt}")
        return self

    @property
    def ends_at(self) -> dt.datetime | None:
        """``endsAt`` with the zero time read as none."""
        if self.endsAt is None or self.endsAt.year <= GO_ZERO_YEAR:
            return None
        return self.endsAt


class WebhookPayload(BaseModel):
    """The notification Alertmanager POSTs to a webhook receiver (``version`` 4)."""

    model_config = ConfigDict(extra="ignore")
    version: Literal["4"]
    groupKey: str  # noqa: N815
    status: Literal["firing", "resolved"]
    receiver: str = ""
    truncatedAlerts: int = 0  # noqa: N815
    alerts: Annotated[list[WebhookAlert], Field(min_length=1)]
    externalURL: str = ""  # noqa: N815
