"""KPI functions, their catalog and the query that composes them."""
