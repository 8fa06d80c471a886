"""`inv charts.upgrade`: bumping a chart on its own branch, the impact analysis (values, CRDs,
images, resources, patches, changelog) and the report.

One module per step (`plan`, `prepare`, `vendor`, `analyze`, `report`, `commit`, `publish`);
`upgrader` runs them in order.
"""
