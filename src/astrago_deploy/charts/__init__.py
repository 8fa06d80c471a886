"""Upstream charts: vendoring under the lock, archives, repository indexes and the one version
order (newest stable), OCI charts, what a vendored chart accepts (defaults with subcharts,
schema), and scaffolding a new chart's release."""
