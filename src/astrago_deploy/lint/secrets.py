"""The plaintext-secret check: no password, token or private key in committed values.

The one secret scanner. Scans our own values (environment layers, the helmfile with its
release and value templates, custom chart defaults) for keys that name a credential and carry
a literal value, and for PEM private keys anywhere.
References to Secrets (`existingSecret`, `secretName`, `*Key`, `secretEnvVar`) are fine, and
so are empty values and template expressions.
"""

from __future__ import annotations

import re
from pathlib import Path

from astrago_deploy.core import files
from astrago_deploy.core.diagnostics import Diagnostic, shown_path
from astrago_deploy.core.layout import RepoLayout

# A key that names a credential ends with one of these words (harborAdminPassword, clientSecret).
_CREDENTIAL_KEY = re.compile(
    r"(password|passwd|passphrase|secret|token|apikey|api_key|privatekey|private_key|credentials?)$", re.IGNORECASE
)
# ...unless it names where the credential is kept (existingSecretAdminPassword, passwordKey).
_REFERENCE_KEY = re.compile(r"(^existing|(key|name|ref|envvar|file|path)$)", re.IGNORECASE)
_KEY_VALUE = re.compile(r"^\s*-?\s*(?P<key>[A-Za-z0-9_.-]+)\s*:\s*(?P<value>.*?)\s*$")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


_FIX = 'reference an existing Kubernetes Secret instead (README "Secrets")'


def _finding(shown: str, line: int, key: str) -> Diagnostic:
    return Diagnostic(shown, line, key, "error", "holds a plaintext credential", _FIX)


def scanned_files(layout: RepoLayout) -> list[Path]:
    files = [p for p in layout.environments_dir.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()]
    files += sorted(layout.helmfile_dir.rglob("*.gotmpl"))
    files += sorted(layout.custom_dir.glob("*/values.yaml"))
    return sorted(files)


def _literal(value: str) -> bool:
    value = value.split(" #", 1)[0].strip()
    if value in ("", "~", "null", '""', "''", "{}", "[]", "|", ">", "|-", ">-"):
        return False
    return "{{" not in value and not value.startswith(("&", "*"))


def scan_text(path: Path, text: str, root: Path | None = None) -> list[Diagnostic]:
    shown = shown_path(path, root) if root else str(path)
    findings = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        if _PEM.search(line):
            findings.append(_finding(shown, number, "private key"))
            continue
        match = _KEY_VALUE.match(line)
        if not match:
            continue
        key = match["key"]
        if _CREDENTIAL_KEY.search(key) and not _REFERENCE_KEY.search(key) and _literal(match["value"]):
            findings.append(_finding(shown, number, key))
    return findings


def scan(layout: RepoLayout) -> list[Diagnostic]:
    return [f for path in scanned_files(layout) for f in scan_text(path, files.read_text(path), layout.root)]
