"""Analyzing a chart upgrade: reading chart metadata and render failures for the report."""

from __future__ import annotations

from pathlib import Path

import yaml


def _chart_meta(chart_dir: Path) -> dict[str, object]:
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    return meta if isinstance(meta, dict) else {}


def _headline(exc: Exception) -> str:
    """The line of a long helmfile error that says what failed (the post-renderer's, if any)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("post-render "):
            detail = lines[index + 1] if index + 1 < len(lines) else ""
            return f"{line[:200]} {detail[:300]}".strip()
    return lines[-1][:300] if lines else "unknown error"
