"""`inv charts.upgrade`: bumping a chart on its own branch in a temporary worktree, the
impact analysis (values, CRDs, images, resources, patches, changelog) and the report."""
