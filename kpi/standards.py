"""Service standards: how long each product may take, and the promised delivery deadline.

A standard says, per product, the daily cut-off (local time), the number of days
allowed per zone (same region, other region, remote region), whether those are
calendar or working days (working days skip Sundays) and which holidays are
skipped. ``promised_by_expr`` turns it into a deadline for every accepted item.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Final

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field

from kpi.contract import UTC

STANDARDS_FILE: Final = "service-standards.yaml"

_SPRING_FESTIVAL_2026 = [dt.date(2026, 2, 15) + dt.timedelta(days=i) for i in range(9)]
_SPRING_FESTIVAL_2027 = [dt.date(2027, 2, 5) + dt.timedelta(days=i) for i in range(7)]

Days = Annotated[int, Field(ge=0, le=60)]


class ZoneDays(BaseModel):
    """Days allowed from the day of deposit to delivery, per zone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    same_region: Days
    other_region: Days
    remote: Days


class ProductStandard(BaseModel):
    """The service standard of one product."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cutoff: dt.time = Field(
        description="items accepted after this local time count from the next day"
    )
    days: ZoneDays
    working_days: bool = Field(
        default=False, description="count working days (Mon-Sat) instead of calendar days"
    )
    holidays: tuple[dt.date, ...] = ()
    time_zone: str | None = Field(default=None, description="overrides the standard's time zone")


class ServiceStandards(BaseModel):
    """Service standards of every product (``service-standards.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    time_zone: str = "Asia/Shanghai"
    remote_regions: tuple[str, ...] = ()
    products: dict[str, ProductStandard]

    def tz_of(self, product: str) -> str:
        """Time zone whose local days and cut-off apply to ``product``."""
        return self.products[product].time_zone or self.time_zone

    def deadline_days(self) -> list[int]:
        """Every distinct number of days allowed, e.g. for histogram bucket edges."""
        return sorted({d for p in self.products.values() for d in p.days.model_dump().values()})


#: The built-in default, used when a data folder has no ``service-standards.yaml``.
DEFAULT_STANDARDS: Final = ServiceStandards(
    time_zone="Asia/Shanghai",
    remote_regions=("CN-XZ", "CN-XJ", "CN-QH"),
    products={
        # Express runs every day of the year ("no closing"): calendar days, no holidays.
        "express": ProductStandard(
            cutoff=dt.time(17, 0),
            days=ZoneDays(same_region=1, other_region=2, remote=4),
            working_days=False,
        ),
        "standard": ProductStandard(
            cutoff=dt.time(15, 0),
            days=ZoneDays(same_region=2, other_region=4, remote=7),
            working_days=True,
            holidays=tuple(_SPRING_FESTIVAL_2026 + _SPRING_FESTIVAL_2027),
        ),
        "economy": ProductStandard(
            cutoff=dt.time(15, 0),
            days=ZoneDays(same_region=3, other_region=6, remote=10),
            working_days=True,
            holidays=tuple(_SPRING_FESTIVAL_2026 + _SPRING_FESTIVAL_2027),
        ),
    },
)


def load_standards(data_dir: Path) -> ServiceStandards:
    """The data folder's ``service-standards.yaml``, or the built-in default when absent."""
    path = data_dir / STANDARDS_FILE
    if not path.exists():
        return DEFAULT_STANDARDS
    return ServiceStandards.model_validate(yaml.safe_load(path.read_text()))


_ALL_DAYS: Final = (True,) * 7
_MON_TO_SAT: Final = (True,) * 6 + (False,)


def _deadline_for(std: ProductStandard, tz: str, remote: tuple[str, ...]) -> pl.Expr:
    """Deadline expression for items of one product (UTC, end of the last allowed local day)."""
    local = pl.col("accepted_at").dt.convert_time_zone(tz)
    after_cutoff = local.dt.time() > pl.lit(std.cutoff)
    deposit_day = local.dt.date() + pl.when(after_cutoff).then(pl.duration(days=1)).otherwise(
        pl.duration(days=0)
    )
    mask = _MON_TO_SAT if std.working_days else _ALL_DAYS
    holidays = list(std.holidays)
    # A deposit on a non-counting day counts from the next counting day.
    start = deposit_day.dt.add_business_days(0, week_mask=mask, holidays=holidays, roll="forward")
    days = (
        pl.when(pl.col("destination").is_in(list(remote)))
        .then(std.days.remote)
        .when(pl.col("origin") == pl.col("destination"))
        .then(std.days.same_region)
        .otherwise(std.days.other_region)
    )
    last_day = start.dt.add_business_days(days, week_mask=mask, holidays=holidays)
    next_midnight = (last_day + pl.duration(days=1)).cast(pl.Datetime("us"))
    return next_midnight.dt.replace_time_zone(
        tz, ambiguous="earliest", non_existent="null"
    ).dt.convert_time_zone("UTC") - pl.duration(microseconds=1)


def computed_deadline_expr(standards: ServiceStandards) -> pl.Expr:
    """Deadline from the standard for columns ``accepted_at, product, origin, destination``.

    Acceptance after the product's cut-off (local time) counts from the next day;
    a deposit on a non-counting day counts from the next counting day; the deadline
    is the last instant (23:59:59.999999 local) of the n-th counting day after
    that. Unknown products get no deadline (null), never a guessed one.
    """
    expr: pl.Expr = pl.lit(None, dtype=UTC)
    for name, std in reversed(standards.products.items()):
        deadline = _deadline_for(std, standards.tz_of(name), standards.remote_regions)
        expr = pl.when(pl.col("product") == name).then(deadline).otherwise(expr)
    return expr.cast(UTC)


def promised_by_expr(standards: ServiceStandards) -> pl.Expr:
    """The promise: the accepted event's own ``promised_by`` when given, else the standard's."""
    return pl.coalesce(pl.col("promised_by_given"), computed_deadline_expr(standards)).alias(
        "promised_by"
    )
