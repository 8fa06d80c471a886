"""Offline validation of rendered manifests against Kubernetes and CRD schemas, and the
check that offline environments pull every image from their site registry."""
