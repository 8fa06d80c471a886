"""Kustomize patches: the post-renderer that applies them, and checking each one against fresh renders."""
