"""The one rule for what a chart name and a chart version may be.

Both become folder names (`charts/external/NAME-VERSION`), branch names (`chart/NAME-VERSION`)
and label values, so every place that takes one applies this rule: the lock, repository index
entries, OCI tags and `charts.add`. A name is Helm's (lower-case letters, digits, `-`, `_`, `.`),
at most a label value's 63 characters (`helm.sh/chart` labels carry it); a version is made of
semver's characters with an optional leading `v`, at most 64, and so never a path.
"""

from __future__ import annotations

import re

CHART_NAME = re.compile(r"[a-z0-9]([-a-z0-9_.]*[a-z0-9])?")
MAX_CHART_NAME = 63
CHART_VERSION = re.compile(r"[0-9A-Za-z][-0-9A-Za-z_.+]*")
MAX_CHART_VERSION = 64


def chart_name_problem(name: str) -> str | None:
    """Why `name` cannot be a chart name (it becomes a folder and branch name), or None."""
    if len(name) > MAX_CHART_NAME:
        return f"longer than {MAX_CHART_NAME} characters"
    if not CHART_NAME.fullmatch(name):
        return "use lower-case letters, digits, '-', '_' and '.'"
    return None


def chart_version_problem(version: str) -> str | None:
    """Why `version` cannot be a chart version (it becomes part of a folder name), or None."""
    if len(version) > MAX_CHART_VERSION:
        return f"longer than {MAX_CHART_VERSION} characters"
    if not CHART_VERSION.fullmatch(version):
        return "use letters, digits, '.', '-', '_' and '+'"
    return None


def shortened(text: str, keep: int = 80) -> str:
    """`text` quoted for a message, cut to `keep` characters (an over-long name would fill the screen)."""
    return repr(text) if len(text) <= keep else f"{text[:keep]!r}... ({len(text)} characters)"
