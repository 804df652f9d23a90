"""Monitoring mixin: recording rules, alerts, dashboards and configs generated from the catalog."""
