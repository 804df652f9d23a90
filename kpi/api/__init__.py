"""The analyst API (FastAPI): exact KPIs, drill-downs and exports over a data folder."""

from kpi.api.app import create_app
from kpi.api.settings import Settings, load_settings

__all__ = ["Settings", "create_app", "load_settings"]
