"""Upstream charts: vendoring under the lock, archives, repository indexes, OCI charts, and
scaffolding a new chart's release."""
