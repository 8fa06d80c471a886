"""Telling values a chart generates at render time from configuration.

A value is generated when two renders of identical inputs disagree on it: random keys and
passwords (`randAlphaNum`), certificates (`genCA`, `genSignedCert`), salted hashes
(`htpasswd`), timestamps (`now`). Only a chart whose templates call such a function can
generate one, so only its releases are rendered a second time to prove which values are
random (`generating_charts`); everything else is deterministic by construction and costs
nothing extra. `normalize_generated` replaces exactly the values the two renders disagree on
by one marker and names where it did, so the render is reproducible and the report says why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from astrago_deploy.render.manifests import resource_id

NORMALIZED = "<normalized: generated at render time>"

# Sprig/helm functions whose result differs between two renders of the same input.
RANDOM_FUNCTIONS = (
    "randAlphaNum",
    "randAlpha",
    "randNumeric",
    "randAscii",
    "randBytes",
    "randInt",
    "shuffle",
    "uuidv4",
    "genPrivateKey",
    "genCA",
    "genCAWithKey",
    "genSelfSignedCert",
    "genSelfSignedCertWithKey",
    "genSignedCert",
    "genSignedCertWithKey",
    "htpasswd",
    "bcrypt",
    "encryptAES",
    "now",
    "unixEpoch",
)
_CALL = re.compile(r"\b(" + "|".join(RANDOM_FUNCTIONS) + r")\b")
# Only template actions can call a function; a word in YAML text or a comment cannot.
_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_TEMPLATE_SUFFIXES = (".yaml", ".yml", ".tpl", ".txt", ".json", ".gotmpl")


def random_calls(text: str) -> set[str]:
    """The generating functions the template actions of `text` call (comments excluded)."""
    found: set[str] = set()
    for action in _ACTION.findall(text):
        found |= set(_CALL.findall(_COMMENT.sub("", action)))
    return found


def chart_random_calls(chart_dir: Path) -> set[str]:
    """The generating functions any template of the chart at `chart_dir` (subcharts included) calls."""
    found: set[str] = set()
    for path in sorted(chart_dir.rglob("*")):
        if path.suffix in _TEMPLATE_SUFFIXES and "templates" in path.relative_to(chart_dir).parts and path.is_file():
            found |= random_calls(path.read_text(encoding="utf-8", errors="replace"))
    return found


def normalize_generated(first: list[dict[str, Any]], second: Iterable[dict[str, Any]]) -> list[str]:
    """Replace in `first` every value that differs in `second` (a render of the same inputs) by
    NORMALIZED; returns `Kind/namespace/name path` for each value replaced.

    Documents are paired by identity; one that only one render has (a generated name) is left
    as it is: there is no second value to compare.
    """
    others = {resource_id(doc): doc for doc in second}
    replaced = []
    for doc in first:
        ident = resource_id(doc)
        other = others.get(ident)
        if other is not None:
            replaced += [f"{ident} {path}" for path in _replace_differences(doc, other, "")]
    return replaced


def _replace_differences(node: Any, other: Any, path: str) -> Iterator[str]:
    """Replace, inside the mapping or list `node`, each child that differs from `other`'s."""
    if isinstance(node, dict) and isinstance(other, dict):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            if key not in other:
                continue
            if _same_shape(value, other[key]):
                yield from _replace_differences(value, other[key], child)
            elif value != other[key]:
                node[key] = NORMALIZED
                yield child
    elif isinstance(node, list) and isinstance(other, list):
        for index, value in enumerate(node):
            child = f"{path}[{index}]"
            if _same_shape(value, other[index]):
                yield from _replace_differences(value, other[index], child)
            elif value != other[index]:
                node[index] = NORMALIZED
                yield child


def _same_shape(value: Any, other: Any) -> bool:
    """Both mappings, or both lists of one length: compare inside rather than replace whole."""
    if isinstance(value, dict) and isinstance(other, dict):
        return True
    return isinstance(value, list) and isinstance(other, list) and len(value) == len(other)
