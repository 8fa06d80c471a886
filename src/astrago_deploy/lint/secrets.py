"""The plaintext-secret check: no password, token or private key in committed values.

The one secret scanner. Scans our own values (environment layers, the helmfile with its
release and value templates, custom chart defaults) for keys that name a credential and carry
a literal value, and for PEM private keys anywhere. It reads parsed YAML, not lines, so every
way of writing a value is seen: block and flow mappings, quoted keys, block scalars
(`password: |`), anchors and aliases, and container env lists (`- name: DB_PASSWORD` with
`value: ...`); lines come from the parser's marks. Go template actions in `.gotmpl` files are
replaced by placeholders first (a templated value is not a literal).
References to Secrets (`existingSecret`, `secretName`, `*Key`, `secretEnvVar`) are fine, and
so are empty values and template expressions.
"""

from __future__ import annotations

import re
from pathlib import Path

from astrago_deploy.core import diagnostics, files, yaml
from astrago_deploy.core.diagnostics import Diagnostic, shown_path
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.yaml import YamlError, YamlNode

# A key that names a credential ends with one of these words (harborAdminPassword, clientSecret).
_CREDENTIAL_KEY = re.compile(
    r"(password|passwd|passphrase|secret|token|apikey|api_key|privatekey|private_key|credentials?)$", re.IGNORECASE
)
# ...unless it names where the credential is kept (existingSecretAdminPassword, passwordKey).
_REFERENCE_KEY = re.compile(r"(^existing|(key|name|ref|envvar|file|path)$)", re.IGNORECASE)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
# Go template actions: comments first (they may hold anything), then actions, which may hold
# quoted and raw strings with braces inside ({{`{{ .Release.Name }}`}}).
_TEMPLATE_COMMENT = re.compile(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", re.DOTALL)
_TEMPLATE_ACTION = re.compile(r"\{\{(?:`[^`]*`|\"(?:\\.|[^\"\\])*\"|[^`\"}]|\}(?!\}))*\}\}", re.DOTALL)
_PLACEHOLDER = re.compile(r"__astrago_template_[0-9]+__")
# Scalars that are not a value someone typed in: empty, null, booleans.
_NOT_LITERAL_TAGS = frozenset({"null", "bool"})

_FIX = 'reference an existing Kubernetes Secret instead (README "Secrets")'


def _finding(shown: str, line: int, key: str) -> Diagnostic:
    return diagnostics.error(shown, line, key, "holds a plaintext credential", _FIX)


def scanned_files(layout: RepoLayout) -> list[Path]:
    files = [p for p in layout.environments_dir.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()]
    files += sorted(layout.helmfile_dir.rglob("*.gotmpl"))
    files += sorted(layout.custom_dir.glob("*/values.yaml"))
    return sorted(files)


def without_template_actions(text: str) -> str:
    """`text` with each Go template action replaced by a unique placeholder, line numbers kept.

    A line that held only actions (`{{- range ... }}`, `{{ $out | toYaml }}`) becomes empty, so
    the YAML around it parses; an action inside a line becomes a plain scalar.
    """
    counter = 0

    def placeholder(match: re.Match[str]) -> str:
        nonlocal counter
        counter += 1
        return f"__astrago_template_{counter}__" + "\n" * match.group().count("\n")

    replaced = _TEMPLATE_ACTION.sub(placeholder, _TEMPLATE_COMMENT.sub(placeholder, text))
    lines = [
        "" if _PLACEHOLDER.sub("", line).strip() == "" and _PLACEHOLDER.search(line) else line
        for line in replaced.split("\n")
    ]
    return "\n".join(lines)


def _credential_name(name: str) -> bool:
    return bool(_CREDENTIAL_KEY.search(name)) and not _REFERENCE_KEY.search(name)


def _literal(node: YamlNode) -> bool:
    """A scalar someone typed in (a string or number), not empty, null, a boolean or a template."""
    if node.kind != "scalar" or node.tag in _NOT_LITERAL_TAGS or not node.text.strip():
        return False
    return "{{" not in node.text and not _PLACEHOLDER.search(node.text)


def _scalar_text(node: YamlNode | None) -> str:
    return node.text if node is not None and node.kind == "scalar" else ""


class _Scan:
    """One walk over a file's documents; each collection node is visited once, so an alias (even
    one inside its own anchor, or a billion-laughs chain) costs nothing more."""

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self.findings: dict[int, Diagnostic] = {}
        self.seen: set[int] = set()

    def report(self, line: int, key: str) -> None:
        self.findings.setdefault(line, _finding(self.shown, line, key))

    def walk(self, node: YamlNode) -> None:
        if node.kind == "scalar":
            if _PEM.search(node.text):
                self.report(node.line, "private key")
            return
        if id(node) in self.seen:
            return
        self.seen.add(id(node))
        if node.kind == "sequence":
            for item in node.items:
                self.walk(item)
            return
        self._env_entry(node)
        for key, value in node.pairs:
            name = _scalar_text(key)
            if _credential_name(name) and _literal(value):
                self.report(key.line, name)
            else:
                self.walk(value)

    def _env_entry(self, node: YamlNode) -> None:
        """`- name: DB_PASSWORD` / `value: hunter2`: a container env var holding a credential."""
        fields = {_scalar_text(key): (key, value) for key, value in node.pairs}
        if "name" not in fields or "value" not in fields:
            return
        name = _scalar_text(fields["name"][1])
        value_key, value = fields["value"]
        if _credential_name(name) and _literal(value):
            self.report(value_key.line, name)


def scan_text(path: Path, text: str, root: Path | None = None) -> list[Diagnostic]:
    shown = shown_path(path, root) if root else str(path)
    source = without_template_actions(text) if path.suffix == ".gotmpl" else text
    try:
        documents = yaml.compose_all(source, shown)
    except YamlError as exc:
        # A file the scan cannot read is not a file without secrets.
        return [diagnostics.yaml_error(shown, exc, fix="correct the YAML there; the file was not checked for secrets")]
    scan = _Scan(shown)
    for document in documents:
        scan.walk(document)
    return [scan.findings[line] for line in sorted(scan.findings)]


def scan(layout: RepoLayout) -> list[Diagnostic]:
    return [f for path in scanned_files(layout) for f in scan_text(path, files.read_text(path), layout.root)]
