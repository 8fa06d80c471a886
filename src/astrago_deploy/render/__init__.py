"""Rendering environments offline, reading rendered manifests, and diffs between renders."""
