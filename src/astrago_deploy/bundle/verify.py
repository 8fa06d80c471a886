"""`inv bundle.verify`: check a bundle at the site with only the task suite.

A folder, or a tar (or the first of its parts): a tar's members are all checked before any is
extracted (`archive.check_members`), then it is extracted into a temporary folder beside it
(or `--extract-to`, kept only when the bundle verifies). The checks, each naming what fails:
`SHA256SUMS` (every file listed with its digest, nothing unlisted), the image layout (every
blob's digest and size, every manifest's references present, no blob that nothing names),
`bundle.json` consistent with the content (charts, tools and wheels by sha256, every image by
digest in the layout's index), and the git bundle (cloned into a scratch repository with
object checking, its HEAD the commit `bundle.json` names).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrago_deploy.bundle import archive, content, oci_layout, sums
from astrago_deploy.bundle.create import BUNDLE_JSON, FORMAT, IMAGES_DIR
from astrago_deploy.core.command import Command, Timeouts
from astrago_deploy.core.digests import sha256_file
from astrago_deploy.core.errors import GitError, InputError


@dataclass
class VerifyReport:
    path: Path
    files: int = 0
    bytes: int = 0
    images: int = 0
    manifests: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    commit: str = ""
    from_base: int = 0  # blobs an incremental bundle leaves to its base, found there
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "ok": self.ok,
            "files": self.files,
            "bytes": self.bytes,
            "images": self.images,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "blobBytes": self.blob_bytes,
            "commit": self.commit,
            "fromBase": self.from_base,
            "problems": self.problems,
        }


def verify(path: Path, extract_to: Path | None = None, base: Path | None = None) -> VerifyReport:
    """Verify the bundle folder or tar at `path` (an incremental one against its `base` folder)."""
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.is_dir():
        return verify_folder(path, base)
    parent = extract_to or path.parent
    if extract_to is None:
        with tempfile.TemporaryDirectory(prefix=".bundle-verify-", dir=parent) as scratch:
            folder = archive.extract(path, Path(scratch))
            report = verify_folder(folder, base)
    else:
        folder = archive.extract(path, parent)
        report = verify_folder(folder, base)
        if not report.ok:
            shutil.rmtree(folder)
    report.path = path
    return report


def verify_folder(root: Path, base: Path | None = None) -> VerifyReport:
    report = VerifyReport(root)
    checked = sums.check(root)
    report.files, report.bytes = checked.files, checked.bytes
    report.problems += checked.problems

    document, document_problem = _read_document(root)
    report.problems += _base_problems(document, base)
    layout = oci_layout.verify(root / IMAGES_DIR, bases=[base / IMAGES_DIR] if base else [])
    report.from_base = layout.from_bases
    report.images, report.manifests, report.blobs, report.blob_bytes = (
        layout.images, layout.manifests, layout.blobs, layout.bytes,
    )  # fmt: skip
    report.problems += [f"{IMAGES_DIR}/{problem}" for problem in layout.problems]

    if document is None:
        report.problems.append(document_problem)
        return report
    report.problems += _consistency(root, document, checked.listed)
    report.commit, problem = _check_repo(root, str((document.get("source") or {}).get("commit", "")))
    if problem:
        report.problems.append(problem)
    return report


def _read_document(root: Path) -> tuple[dict[str, Any] | None, str]:
    """bundle.json, or None and why it cannot be used."""
    try:
        document = json.loads((root / BUNDLE_JSON).read_bytes())
    except FileNotFoundError:
        return None, f"{BUNDLE_JSON}: missing"
    except ValueError as exc:
        return None, f"{BUNDLE_JSON}: not JSON ({exc})"
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        return None, f"{BUNDLE_JSON}: format {found!r}, this suite reads format {FORMAT}"
    return document, ""


def _base_problems(document: dict[str, Any] | None, base: Path | None) -> list[str]:
    """An incremental bundle needs the base it names (by its bundle.json's digest); a full one none."""
    if document is None:
        return []  # reported by the bundle.json check
    recorded = document.get("base")
    named = recorded.get("bundleJson", "") if isinstance(recorded, dict) else ""
    if not named:
        return [f"--base {base}: this bundle is complete, it builds on no other"] if base else []
    if base is None:
        return [f"{BUNDLE_JSON}: an incremental bundle on the bundle whose bundle.json is {named}: give it with --base"]
    try:
        found = f"sha256:{sha256_file(base / BUNDLE_JSON)}"
    except FileNotFoundError:
        return [f"--base {base}: no {BUNDLE_JSON} there"]
    if found != named:
        return [f"--base {base}: its {BUNDLE_JSON} is {found}, this bundle builds on {named}"]
    return []


def _consistency(root: Path, document: dict[str, Any], listed: dict[str, str]) -> list[str]:
    """bundle.json against the files: what it names is there, with the digest it says."""
    problems: list[str] = []

    def expect(rel: object, hexdigest: object, what: str) -> None:
        if not isinstance(rel, str) or not sums.safe_relative(rel):
            problems.append(f"{BUNDLE_JSON}: {what}: path {rel!r} leaves the bundle")
        elif rel not in listed:
            problems.append(f"{BUNDLE_JSON}: {what}: {rel} is not in the bundle")
        elif str(hexdigest).removeprefix("sha256:") != listed[rel]:
            problems.append(f"{BUNDLE_JSON}: {what}: {rel} has sha256 {listed[rel]}, bundle.json says {hexdigest}")

    for chart in document.get("charts") or []:
        expect(chart.get("path"), chart.get("digest"), f"chart {chart.get('name')}")
    for tool in document.get("tools") or []:
        expect(tool.get("path"), tool.get("sha256"), f"tool {tool.get('name')}")
    for wheel in (document.get("wheels") or {}).get("files") or []:
        expect(wheel.get("path"), wheel.get("sha256"), f"wheel {wheel.get('name')}")
    if content.REPO_BUNDLE not in listed:
        problems.append(f"{BUNDLE_JSON}: {content.REPO_BUNDLE} is not in the bundle")
    try:
        entries = {e.source: e for e in oci_layout.ImageLayout(root / IMAGES_DIR).entries()}
    except Exception:
        entries = {}
    images = document.get("images") or []
    for image in images:
        name = image.get("image")
        entry = entries.get(name)
        if entry is None:
            problems.append(f"{BUNDLE_JSON}: image {name} is not in {IMAGES_DIR}/index.json")
        elif entry.descriptor.digest != image.get("digest"):
            problems.append(
                f"{BUNDLE_JSON}: image {name}: index.json has {entry.descriptor.digest}, "
                f"bundle.json {image.get('digest')}"
            )
    for name in sorted(set(entries) - {i.get("image") for i in images}):
        problems.append(f"{IMAGES_DIR}/index.json: image {name} is not in {BUNDLE_JSON}")
    return problems


def _check_repo(root: Path, commit: str) -> tuple[str, str]:
    """(HEAD of repo.bundle, problem or ""): cloned bare into a scratch folder, objects checked."""
    bundle = root / content.REPO_BUNDLE
    if not bundle.is_file():
        return "", ""  # named by the sums and consistency checks
    with tempfile.TemporaryDirectory(prefix="bundle-repo-") as scratch:
        clone = Path(scratch) / "repo.git"
        argv = ["git", "-c", "transfer.fsckObjects=true", "clone", "--bare", "--quiet", str(bundle), str(clone)]
        try:
            Command(argv, cwd=Path(scratch), env={"PATH": "/usr/bin:/bin", "HOME": scratch},
                    error=GitError, timeout=Timeouts.GIT_NETWORK).run()  # fmt: skip
            head = Command(["git", "rev-parse", "HEAD"], cwd=clone, env={"PATH": "/usr/bin:/bin", "HOME": scratch},
                           error=GitError, timeout=Timeouts.GIT_LOCAL).run().stdout.strip()  # fmt: skip
        except GitError as exc:
            return "", f"{content.REPO_BUNDLE}: not a valid git bundle ({exc.stderr.strip().splitlines()[-1:] or exc})"
    if commit and head != commit:
        return head, f"{content.REPO_BUNDLE}: HEAD is {head}, bundle.json names {commit}"
    return head, ""
