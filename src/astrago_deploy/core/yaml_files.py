"""Reading and editing the YAML files people write (values, kustomizations, the lock).

`read_mapping` loads a file that must hold a mapping, with errors that name the file.
`load_for_edit`/`dump` are the round-trip pair: comments, key order and quoting survive, so an
edit touches only the lines it must.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from astrago_deploy.core import files
from astrago_deploy.core.errors import ConfigError


def first_line(text: str) -> str:
    """The first line of a (YAML parser's multi-line) message."""
    return text.strip().splitlines()[0] if text.strip() else text


def read_mapping(path: Path, missing_ok: bool = False) -> dict[str, Any]:
    """The mapping in `path` (empty for an empty file, or a missing one with `missing_ok`)."""
    try:
        text = files.read_text(path)
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ConfigError(f"{path} does not exist") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {first_line(str(exc))}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data


def round_trip() -> YAML:
    handler = YAML(typ="rt")
    handler.preserve_quotes = True
    handler.indent(mapping=2, sequence=4, offset=2)
    handler.width = 4096
    return handler


def load_for_edit(path: Path) -> CommentedMap:
    """A round-trip document of `path`, which must hold a mapping."""
    try:
        doc = round_trip().load(files.read_text(path))
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {first_line(str(exc))}") from exc
    if not isinstance(doc, CommentedMap):
        raise ConfigError(f"{path}: expected a mapping")
    return doc


def dump(doc: Any) -> str:
    out = io.StringIO()
    round_trip().dump(doc, out)
    return out.getvalue()
