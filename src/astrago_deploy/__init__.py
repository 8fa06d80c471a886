"""Astrago deployment task suite: vendoring, rendering, checking and deploying with Helmfile."""

__version__ = "0.1.0"
