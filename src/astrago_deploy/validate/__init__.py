"""Offline validation of rendered manifests against Kubernetes and CRD schemas."""
