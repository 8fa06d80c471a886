"""Deploying and destroying an environment with helmfile behind charts.verify and a
kube-context check."""
