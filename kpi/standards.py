"""Service standards: how long each product may take, and the promised delivery deadline.

A standard says, per product, the daily cut-off (local time), the number of days
allowed per zone (same region, other region, remote region), whether those are
calendar or working days (working days skip Sundays) and which holidays are
skipped. ``promised_by_expr`` turns it into a deadline for every accepted item.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Final

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kpi.contract import FACILITY_TYPES, UTC

STANDARDS_FILE: Final = "service-standards.yaml"

_SPRING_FESTIVAL_2026 = [dt.date(2026, 2, 15) + dt.timedelta(days=i) for i in range(9)]
_SPRING_FESTIVAL_2027 = [dt.date(2027, 2, 5) + dt.timedelta(days=i) for i in range(7)]

Days = Annotated[int, Field(ge=0, le=60)]


class ReferenceFileError(ValueError):
    """A reference file (service standards, facilities) that must not be used, with every reason."""

    def __init__(self, file: str, problems: list[str]) -> None:
        super().__init__(f"{file}: " + "; ".join(problems))
        self.file = file
        self.problems = problems


def _resolvable_tz(tz: str | None) -> str | None:
    """``tz`` if the KPI engine (polars, chrono-tz) knows it; a typo fails at load, not per batch."""
    if tz is None:
        return tz
    try:
        pl.Series([dt.datetime(2000, 1, 1)]).dt.replace_time_zone(tz)
    except Exception as exc:  # polars raises ComputeError (or InvalidOperationError)
        raise ValueError(f"unknown time zone {tz!r}") from exc
    return tz


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

    _tz = field_validator("time_zone")(_resolvable_tz)


Hours = Annotated[float, Field(gt=0, le=24 * 60)]


class StageTargets(BaseModel):
    """Per-stage time targets in hours (optional ``stages:`` of the standard).

    ``dwell_hours`` is keyed by facility type (``collection``, ``processing``,
    ``delivery``) or ``default``; ``leg_hours`` by ``default``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    dwell_hours: dict[str, Hours] = Field(default_factory=dict)
    leg_hours: dict[str, Hours] = Field(default_factory=dict)

    @field_validator("dwell_hours")
    @classmethod
    def _facility_types(cls, value: dict[str, float]) -> dict[str, float]:
        """Keys are the facility types of facilities.csv (or ``default``): a typo such as
        ``hub`` would silently leave that type without a target."""
        allowed = (*FACILITY_TYPES, "default")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown facility type(s) {', '.join(map(repr, unknown))}: "
                f"keys are the facility types {', '.join(allowed)}"
            )
        return value

    @field_validator("leg_hours")
    @classmethod
    def _leg_keys(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - {"default"})
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(map(repr, unknown))}: the only key is default"
            )
        return value

    def dwell_target(self, facility_type: str | None) -> float | None:
        """The dwell target of a facility type (its own, else the default; None when unset)."""
        if facility_type is not None and facility_type in self.dwell_hours:
            return self.dwell_hours[facility_type]
        return self.dwell_hours.get("default")

    def leg_target(self) -> float | None:
        """The leg target (None when unset)."""
        return self.leg_hours.get("default")


class ServiceStandards(BaseModel):
    """Service standards of every product (``service-standards.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    time_zone: str = "Asia/Shanghai"
    remote_regions: tuple[str, ...] = ()
    products: dict[str, ProductStandard]
    stages: StageTargets = Field(default_factory=StageTargets)

    _tz = field_validator("time_zone")(_resolvable_tz)

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
    """The data folder's ``service-standards.yaml``, or the built-in default when absent.

    Validated completely (structure, day counts, time zones resolved): any problem
    raises ``ReferenceFileError`` listing every reason.
    """
    path = data_dir / STANDARDS_FILE
    if not path.exists():
        return DEFAULT_STANDARDS
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ReferenceFileError(STANDARDS_FILE, [f"unreadable: {exc}"]) from exc
    try:
        return ServiceStandards.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ReferenceFileError(STANDARDS_FILE, problems) from exc


_ALL_DAYS: Final = (True,) * 7
_MON_TO_SAT: Final = (True,) * 6 + (False,)


def _local_wall_time(tz: str) -> pl.Expr:
    """``accepted_at`` as a naive local wall-clock time in ``tz`` (cheap date arithmetic)."""
    return pl.col("accepted_at").dt.convert_time_zone(tz).dt.replace_time_zone(None)


def _deposit_day(std: ProductStandard, tz: str, local: pl.Expr | None = None) -> pl.Expr:
    """The local day an acceptance counts from: the next day when after the cut-off.

    ``local`` is ``_local_wall_time(tz)`` when the caller has it already. A time after
    the cut-off minus (cut-off + 1 us) stays on its day, one at or before it falls on
    the day before; adding a day gives the deposit day either way.
    """
    if local is None:
        local = _local_wall_time(tz)
    cutoff = dt.timedelta(
        hours=std.cutoff.hour,
        minutes=std.cutoff.minute,
        seconds=std.cutoff.second,
        microseconds=std.cutoff.microsecond + 1,
    )
    return (local - cutoff).dt.date() + dt.timedelta(days=1)


def _days_allowed(std: ProductStandard, remote: tuple[str, ...]) -> pl.Expr:
    return (
        pl.when(pl.col("destination").is_in(list(remote)))
        .then(std.days.remote)
        .when(pl.col("origin") == pl.col("destination"))
        .then(std.days.same_region)
        .otherwise(std.days.other_region)
    )


def _deadline_from(std: ProductStandard, tz: str, deposit_day: pl.Expr, days: pl.Expr) -> pl.Expr:
    """End (UTC) of the ``days``-th counting day after ``deposit_day`` (rolled forward)."""
    mask = _MON_TO_SAT if std.working_days else _ALL_DAYS
    holidays = list(std.holidays)
    # A deposit on a non-counting day counts from the next counting day.
    start = deposit_day.dt.add_business_days(0, week_mask=mask, holidays=holidays, roll="forward")
    last_day = start.dt.add_business_days(days, week_mask=mask, holidays=holidays)
    return _day_end_utc((last_day + pl.duration(days=1)).cast(pl.Datetime("us")), tz)


def _day_end_utc(next_midnight: pl.Expr, tz: str) -> pl.Expr:
    """Last instant (UTC) before the local wall-clock ``next_midnight`` in ``tz``.

    A doubled midnight (clocks back from 01:00) ends the day at its first occurrence.
    A skipped one (clocks forward at 00:00, as in Havana or Santiago) does not exist:
    the day then ends at the transition, i.e. midnight at the offset in force at 23:00.
    """
    end = pl.coalesce(
        next_midnight.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null"),
        (next_midnight - pl.duration(hours=1)).dt.replace_time_zone(
            tz, ambiguous="latest", non_existent="null"
        )
        + pl.duration(hours=1),
    )
    return end.dt.convert_time_zone("UTC") - pl.duration(microseconds=1)


def _deadline_for(std: ProductStandard, tz: str, remote: tuple[str, ...]) -> pl.Expr:
    """Deadline expression for items of one product (UTC, end of the last allowed local day)."""
    return _deadline_from(std, tz, _deposit_day(std, tz), _days_allowed(std, remote))


def _per_product(
    standards: ServiceStandards,
    expr_for: Callable[[str, ProductStandard], pl.Expr],
    dtype: pl.DataType,
) -> pl.Expr:
    """``expr_for(name, standard)`` on the rows of each product; null for unknown products."""
    expr: pl.Expr = pl.lit(None, dtype=dtype)
    for name, std in reversed(standards.products.items()):
        expr = pl.when(pl.col("product") == name).then(expr_for(name, std)).otherwise(expr)
    return expr.cast(dtype)


def computed_deadline_expr(standards: ServiceStandards) -> pl.Expr:
    """Deadline from the standard for columns ``accepted_at, product, origin, destination``.

    Acceptance after the product's cut-off (local time) counts from the next day;
    a deposit on a non-counting day counts from the next counting day; the deadline
    is the last instant (23:59:59.999999 local) of the n-th counting day after
    that. Unknown products get no deadline (null), never a guessed one.
    """
    return _per_product(
        standards,
        lambda name, std: _deadline_for(std, standards.tz_of(name), standards.remote_regions),
        UTC,
    )


# Layout of the integer key of ``with_promised_by``: product, deposit day, days allowed.
_DAY_SHIFT: Final = 2**16
_PRODUCT_SHIFT: Final = 2**48
_DAY_OFFSET: Final = 2**30  # keeps days before 1970 positive


def with_promised_by(frame: pl.LazyFrame, standards: ServiceStandards) -> pl.LazyFrame:
    """``frame`` plus ``promised_by``: same values as ``promised_by_expr``, computed faster.

    The calendar work (business days, local midnight) runs once per distinct
    (product, deposit day, days allowed), packed in one integer, not once per item:
    a million items share a few hundred such keys.
    """
    names = list(standards.products)
    if any(
        d >= _DAY_SHIFT for p in standards.products.values() for d in p.days.model_dump().values()
    ):
        return frame.with_columns(promised_by_expr(standards))
    # One time-zone conversion per zone (products usually share one), not per product.
    zones = {standards.tz_of(name): f"_local{i}" for i, name in enumerate(names)}

    def code(name: str, std: ProductStandard) -> pl.Expr:
        tz = standards.tz_of(name)
        day = _deposit_day(std, tz, pl.col(zones[tz])).cast(pl.Int64) + _DAY_OFFSET
        n = _days_allowed(std, standards.remote_regions)
        return names.index(name) * _PRODUCT_SHIFT + day * _DAY_SHIFT + n

    # Collected once: the deadlines are matched to rows by key value, and a second
    # evaluation of a lazy input (a group-by) may come back in another row order.
    keyed = (
        frame.with_columns(_local_wall_time(tz).alias(col) for tz, col in zones.items())
        .with_columns(_per_product(standards, code, pl.Int64()).alias("_code"))
        .drop(zones.values())
        .collect()
    )
    c = pl.col("_code")
    product = (c // _PRODUCT_SHIFT).replace_strict(list(range(len(names))), names)
    day = ((c % _PRODUCT_SHIFT) // _DAY_SHIFT - _DAY_OFFSET).cast(pl.Date)
    deadline = _per_product(
        standards,
        lambda name, std: _deadline_from(std, standards.tz_of(name), pl.col("_day"), pl.col("_n")),
        UTC,
    )
    table = (
        keyed.select(c.unique().drop_nulls())
        .with_columns(product.alias("product"), day.alias("_day"), (c % _DAY_SHIFT).alias("_n"))
        .select("_code", deadline.alias("_deadline"))
    )
    # A lookup by key adds one column; a join would copy every column of the frame.
    computed = c.replace_strict(table["_code"], table["_deadline"], default=None, return_dtype=UTC)
    return (
        keyed.lazy()
        .with_columns(pl.coalesce(pl.col("promised_by_given"), computed).alias("promised_by"))
        .drop("_code")
    )


def dispatch_deadline_expr(standards: ServiceStandards) -> pl.Expr:
    """End (UTC) of the deposit day for ``accepted_at, product``: same-day dispatch is a
    first departure at or before it. The deposit day is the local date of acceptance in
    the product's time zone, the next day after the cut-off; calendar days (a dispatch
    target, unlike the delivery promise, runs every day). Null for unknown products."""

    def end_of_day(name: str, std: ProductStandard) -> pl.Expr:
        tz = standards.tz_of(name)
        next_midnight = (_deposit_day(std, tz) + dt.timedelta(days=1)).cast(pl.Datetime("us"))
        return _day_end_utc(next_midnight, tz)

    return _per_product(standards, end_of_day, UTC)


def with_dispatch_by(frame: pl.DataFrame, standards: ServiceStandards) -> pl.DataFrame:
    """``frame`` plus ``dispatch_by``: same values as ``dispatch_deadline_expr``, faster.

    One time-zone conversion per zone, and the local midnight (a zone lookup per value)
    worked out once per distinct (product, deposit day), as ``with_promised_by`` does:
    the expression evaluates every product's branch on every row.
    """
    names = list(standards.products)
    zones = {standards.tz_of(name): f"_local{i}" for i, name in enumerate(names)}

    def code(name: str, std: ProductStandard) -> pl.Expr:
        tz = standards.tz_of(name)
        day = _deposit_day(std, tz, pl.col(zones[tz])).cast(pl.Int64) + _DAY_OFFSET
        return names.index(name) * _PRODUCT_SHIFT + day * _DAY_SHIFT

    def end_of_day(name: str, std: ProductStandard) -> pl.Expr:
        next_midnight = (pl.col("_day") + dt.timedelta(days=1)).cast(pl.Datetime("us"))
        return _day_end_utc(next_midnight, standards.tz_of(name))

    keyed = (
        frame.with_columns(_local_wall_time(tz).alias(col) for tz, col in zones.items())
        .with_columns(_per_product(standards, code, pl.Int64()).alias("_code"))
        .drop(zones.values())
    )
    c = pl.col("_code")
    product = (c // _PRODUCT_SHIFT).replace_strict(list(range(len(names))), names)
    day = ((c % _PRODUCT_SHIFT) // _DAY_SHIFT - _DAY_OFFSET).cast(pl.Date)
    table = (
        keyed.select(c.unique().drop_nulls())
        .with_columns(product.alias("product"), day.alias("_day"))
        .select("_code", _per_product(standards, end_of_day, UTC).alias("_end"))
    )
    end = c.replace_strict(table["_code"], table["_end"], default=None, return_dtype=UTC)
    return keyed.with_columns(end.alias("dispatch_by")).drop("_code")


def promised_by_expr(standards: ServiceStandards) -> pl.Expr:
    """The promise: the accepted event's own ``promised_by`` when given, else the standard's."""
    return pl.coalesce(pl.col("promised_by_given"), computed_deadline_expr(standards)).alias(
        "promised_by"
    )
