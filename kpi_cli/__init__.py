"""The ``kpi`` command: the one seam where the engine (``kpi``) meets its faces.

The engine and the faces (``exporters``, ``kpi.api``, ...) never import each other's
command lines; this package imports both, one module per verb, registered in
``kpi_cli.app``. See docs/architecture.md.
"""
