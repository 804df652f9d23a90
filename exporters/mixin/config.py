"""Tunable settings of the monitoring mixin (objectives, thresholds, links)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from exporters.catalog import API_PORT, EXPORTER_JOB, HOUR

#: Default on-time objectives over the SLO period, per product.
DEFAULT_OBJECTIVES: dict[str, float] = {"express": 0.95, "standard": 0.93, "economy": 0.90}


class BurnWindow(BaseModel):
    """One multi-window burn-rate condition (SRE workbook): long and short window, factor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    long: str
    short: str
    factor: float = Field(gt=0)
    severity: str


class Band(BaseModel):
    """A panel's warning and critical values; ``critical < warning`` means low is bad."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warning: float
    critical: float

    @property
    def high_is_bad(self) -> bool:
        """Whether values above the band are the bad ones."""
        return self.critical >= self.warning


class MixinConfig(BaseModel):
    """Everything the generated rules, alerts and dashboards may be tuned by."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: str = EXPORTER_JOB
    #: On-time objective per product (share of judged deliveries on time).
    objectives: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_OBJECTIVES))
    slo_period: str = "30d"
    #: Page at 2 % of budget in 1 h or 5 % in 6 h; ticket at 10 % in 1 d or in 3 d.
    burn_windows: tuple[BurnWindow, ...] = (
        BurnWindow(long="1h", short="5m", factor=14.4, severity="critical"),
        BurnWindow(long="6h", short="30m", factor=6, severity="critical"),
        BurnWindow(long="1d", short="2h", factor=3, severity="warning"),
        BurnWindow(long="3d", short="6h", factor=1, severity="warning"),
    )
    #: Backlog threshold for facilities that have none configured.
    default_backlog_threshold: int = Field(default=5000, gt=0)
    backlog_oldest_warning_seconds: float = 24 * HOUR
    backlog_oldest_critical_seconds: float = 48 * HOUR
    #: Aged items needed before the oldest-item alert fires: one lost parcel is the
    #: stalled-items alert's business, a queue of old ones is the facility's.
    backlog_oldest_min_items: int = 5
    #: Window over which a steadily growing backlog is judged, and the smallest backlog
    #: worth a ticket (tiny offices fluctuate by a few items all day).
    backlog_growth_window: str = "3h"
    backlog_growth_min_items: int = 100
    overdue_rise_items: int = 50
    stalled_rise_items: int = 50
    #: A region's complaints in the last hour against its own 7-day average.
    complaint_spike_factor: float = 3.0
    complaint_spike_min_per_hour: float = 5.0
    data_stale_seconds: float = 15 * 60
    rejected_ratio: float = Field(default=0.05, gt=0, lt=1)
    late_events_ratio: float = Field(default=0.10, gt=0, lt=1)
    #: The analyst API, for item-level drill-down links and (by default) the runbooks.
    api_url: str = f"http://127.0.0.1:{API_PORT}"
    #: Absolute base of every ``runbook_url``; the anchor is the alert name in lower case.
    #: Empty: the analyst API's ``/runbooks`` page (``{api_url}/runbooks``).
    runbook_base_url: str = ""
    complaint_reply_days: int = 7
    # --- dashboard colours: where a panel turns orange (warning) and red (critical) ---
    #: Share of the SLO period's error budget left (low is bad).
    budget_remaining: Band = Band(warning=0.5, critical=0.25)
    #: 72-hour on-time rate (SPB 72小时准时率; 2024 national figure 83.95 %; low is bad).
    within_72h: Band = Band(warning=0.85, critical=0.80)
    #: Mean full-process time (SPB 全程时限; 2024 national figure 53.88 h; high is bad).
    mean_transit_seconds: Band = Band(warning=60 * HOUR, critical=72 * HOUR)
    #: First-attempt delivery ratio (low is bad).
    first_attempt: Band = Band(warning=0.90, critical=0.85)
    #: Complaints per million items accepted (China, Nov 2018: 38.78; high is bad).
    complaints_per_million: Band = Band(warning=40, critical=100)
    #: Waiting items as a share of the facility's threshold (1 = the alert's limit).
    backlog_share: Band = Band(warning=0.8, critical=1.0)
    #: How many facilities (or lanes) a per-facility view shows (topk): 380 lines help no one.
    top_n: int = Field(default=10, ge=1, le=50)
    # The stage targets are not here: the exporter exposes those of the service standard
    # it loaded (``postal_stage_*_target_seconds``), and the stage rules join against them.
    #: Stage intervals needed in the hour before a p90 may alert (a handful says little).
    stage_alert_min_items: int = Field(default=20, ge=1)
    #: Scrape duration (s): Prometheus' default scrape timeout is 10 s.
    scrape_duration_seconds: Band = Band(warning=5, critical=10)

    @field_validator("objectives")
    @classmethod
    def _objectives_are_ratios(cls, value: dict[str, float]) -> dict[str, float]:
        for product, objective in value.items():
            if not 0 < objective < 1:
                raise ValueError(f"objective for {product} must be in (0, 1), got {objective}")
        return value

    @model_validator(mode="after")
    def _critical_after_warning(self) -> MixinConfig:
        if not 0 < self.backlog_oldest_warning_seconds < self.backlog_oldest_critical_seconds:
            raise ValueError("oldest-item thresholds must satisfy 0 < warning < critical")
        return self

    @field_validator("api_url", "runbook_base_url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an absolute http(s) URL, got {value!r}")
        return value.rstrip("/")

    @property
    def runbooks_url(self) -> str:
        """The absolute URL of the runbooks page."""
        return self.runbook_base_url or f"{self.api_url}/runbooks"

    def runbook(self, alertname: str) -> str:
        """The absolute runbook URL of an alert."""
        return f"{self.runbooks_url}#{alertname.lower()}"
