"""CLI verbs, one module each; ``kpi.cli`` registers them on the ``kpi`` app."""
