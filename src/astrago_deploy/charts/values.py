"""What a vendored chart accepts: its default values with its subcharts', and its JSON schema.

The one reader of a chart tree's defaults. Subcharts are found under `charts/`, keyed as Helm
keys their values: by the dependency's alias when `Chart.yaml` gives one, else by name.
`coalesced_defaults` is what Helm starts from before any override: each subchart's defaults
under its key, with what the parent's `values.yaml` sets there winning, key by key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astrago_deploy.core import files, yaml
from astrago_deploy.core.errors import ConfigError
from astrago_deploy.model.environments import deep_merge


@dataclass
class ChartValues:
    """What a chart accepts: its defaults (with subcharts) and its JSON schema, if any."""

    name: str
    defaults: dict[str, Any]
    schema: dict[str, Any] | None
    subcharts: dict[str, ChartValues]  # by the key the parent's values reach them under

    @classmethod
    def load(cls, chart_dir: Path) -> ChartValues:
        meta = yaml.read_mapping(chart_dir / "Chart.yaml", missing_ok=True)
        defaults = yaml.read_mapping(chart_dir / "values.yaml", missing_ok=True)
        schema_file = chart_dir / "values.schema.json"
        schema = _json_schema(schema_file) if schema_file.is_file() else None
        found = {}
        for sub in sorted((chart_dir / "charts").glob("*/Chart.yaml")):
            loaded = cls.load(sub.parent)
            found[loaded.name] = loaded
        subcharts: dict[str, ChartValues] = {}
        referenced = set()
        for dep in meta.get("dependencies") or []:
            name = dep.get("name") if isinstance(dep, dict) else None
            if name in found:
                subcharts[str(dep.get("alias") or name)] = found[name]
                referenced.add(name)
        # A subchart no dependency names (a v1 chart's requirements.yaml) is keyed by its name.
        subcharts.update({name: sub for name, sub in found.items() if name not in referenced})
        return cls(str(meta.get("name", chart_dir.name)), defaults, schema, subcharts)

    def coalesced_defaults(self) -> dict[str, Any]:
        """The defaults with each subchart's under its key, the parent's settings winning."""
        values = dict(self.defaults)
        for key, sub in self.subcharts.items():
            sub_defaults, own = sub.coalesced_defaults(), values.get(key)
            # Helm skips a parent value that is not a mapping here ("not a table").
            values[key] = deep_merge(sub_defaults, own) if isinstance(own, dict) else sub_defaults
        return values


def _json_schema(path: Path) -> dict[str, Any] | None:
    try:
        schema = json.loads(files.read_text(path))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc
    return schema if isinstance(schema, dict) else None
