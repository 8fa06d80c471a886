"""Kustomize patches: the post-renderer that applies them, scaffolding one, and checking each
against fresh renders (applied / stale / failed)."""
