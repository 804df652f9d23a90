"""Sources: reading and validating a data folder into pinned-schema polars frames."""
