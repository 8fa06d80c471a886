"""`inv charts.upgrade`: bumping a chart on its own branch, the impact analysis and the report."""
