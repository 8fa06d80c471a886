"""`inv bundle.create`: pack what a disconnected site needs from one commit.

The content comes from REF (default: the last stage's branch tip, origin's where there is an
origin, else HEAD), read in a temporary worktree: the working tree is never read. The bundle
is built in `OUT.partial/` and renamed to `OUT` once complete (`bundle.json` and `SHA256SUMS`
written last), so `OUT` is always a whole bundle. Killed or failed part-way, `OUT.partial/`
stays: run again, and every blob already there under its digest is kept (an image layout is
content-addressed, and a partial blob is resumed with Range), so only what is missing is
fetched. A tar (`--out FILE.tar`) is written from the finished folder, then cut into parts
with `--split SIZE`.

Images come from the inventory of each environment (`inv images.list`), through one registry
client: from `IMAGE_MIRROR=HOST[:PORT]` (a registry holding `nvcr.io/nvidia/x` as
`HOST[:PORT]/nvcr.io/nvidia/x`, the `OCI_MIRROR` convention) or from the upstream registries,
with credentials per host from `ASTRAGO_REPO_<HOST>_USERNAME`/`_PASSWORD`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrago_deploy.bundle import archive, content, sums
from astrago_deploy.bundle.oci_layout import ImageLayout
from astrago_deploy.core import atomic
from astrago_deploy.core.console import ByteProgress
from astrago_deploy.core.digests import sha256_file
from astrago_deploy.core.errors import AstragoError, InputError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.http import Fetcher, Mirror
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.leftovers import worktrees_dir
from astrago_deploy.images import inventory as image_inventory
from astrago_deploy.images.reference import ImageRef, parse_image, site_reference
from astrago_deploy.model import environments, promotion
from astrago_deploy.model.lock import VersionsLock
from astrago_deploy.registry.client import RegistryClient
from astrago_deploy.registry.manifest import Platform
from astrago_deploy.registry.reference import Reference
from astrago_deploy.render.diff import prepare_vendored
from astrago_deploy.toolchain.pinned import load_manifest, share_tools

FORMAT = 1
BUNDLE_JSON = "bundle.json"
IMAGES_DIR = "images"
DEFAULT_PLATFORMS = (Platform("linux", "amd64"),)
IMAGE_MIRROR = "IMAGE_MIRROR"


@dataclass
class CreateOptions:
    envs: list[str]
    out: Path
    ref: str | None = None
    platforms: list[Platform] | None = field(default_factory=lambda: list(DEFAULT_PLATFORMS))  # None: all
    split: int | None = None
    workers: int = 6
    mirror: str | None = None  # charts mirror
    site_python: content.SitePython = field(default_factory=content.SitePython)
    base: Path | None = None  # an earlier bundle folder: an incremental bundle leaves its blobs to it


@dataclass
class CreateResult:
    path: Path  # the bundle folder, or the tar (its first part when split)
    commit: str
    images: int
    image_bytes: int
    fetched_bytes: int
    left_out: dict[str, list[str]]  # image -> platforms not carried
    parts: list[Path] = field(default_factory=list)


def default_ref(repo: GitRepo, layout: RepoLayout) -> tuple[str, str]:
    """(commit, how it was chosen): the last stage's tip, else HEAD."""
    try:
        path = promotion.load(layout)
    except AstragoError:
        return repo.resolve("HEAD"), "HEAD (no promotion path)"
    remote = promotion.refresh(repo, path)
    ref = promotion.branch_ref(repo, path.last, remote)
    tip = repo.ref_value(ref)
    if tip:
        return tip, f"the tip of {ref.removeprefix('refs/')}"
    return repo.resolve("HEAD"), f"HEAD ({path.last.branch} does not exist)"


def read_base(base: Path) -> dict[str, Any]:
    """The bundle.json of the bundle folder an incremental one builds on (refused if not one)."""
    if not base.is_dir():
        raise InputError(f"--base {base}: give the folder of an earlier bundle (extract a tar first)")
    try:
        document = json.loads((base / BUNDLE_JSON).read_bytes())
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"--base {base}: no readable {BUNDLE_JSON} ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f"--base {base}: not a format {FORMAT} bundle")
    return document


def base_record(base: Path, left_to_base: int) -> dict[str, Any]:
    """How bundle.json names the base: its bundle.json by digest, its commit, what it supplies."""
    document = read_base(base)
    return {
        "bundleJson": f"sha256:{sha256_file(base / BUNDLE_JSON)}",
        "commit": (document.get("source") or {}).get("commit", ""),
        "blobs": left_to_base,
    }


def image_source(image: ImageRef, environ: Mapping[str, str]) -> Reference:
    """Where to pull `image` from: `IMAGE_MIRROR/<registry>/<path>` when a mirror is set."""
    mirror = environ.get(IMAGE_MIRROR, "").strip().removeprefix("oci://").rstrip("/")
    text = f"{mirror}/{image}" if mirror else str(image)
    return Reference.parse(text)


class BundleCreator:
    def __init__(
        self, layout: RepoLayout, log: Callable[[str], None], environ: Mapping[str, str] | None = None
    ) -> None:
        self.layout = layout
        self.log = log
        self.environ = dict(os.environ if environ is None else environ)

    def run(self, options: CreateOptions) -> CreateResult:
        if not options.envs:
            raise InputError("name at least one environment: --env NAME (repeatable)")
        tar = options.out if options.out.name.endswith(".tar") else None
        final = tar.with_suffix("") if tar else options.out
        for existing in (final, *([tar] if tar else [])):
            if existing.exists():
                raise InputError(f"{existing} exists already: give another --out or remove it")
        if options.base is not None:
            read_base(options.base)
            if options.base.resolve() == final.resolve():
                raise InputError("--base names the bundle being created")
        if options.split and not tar:
            raise InputError("--split cuts a tar: give --out FILE.tar")
        repo = GitRepo(self.layout.root)
        try:
            if options.ref:
                commit, how = repo.resolve(options.ref), options.ref
            else:
                commit, how = default_ref(repo, self.layout)
            self.log(f"bundle of {commit[:12]} ({how}) for {', '.join(options.envs)}")
            staging = final.with_name(f"{final.name}.partial")
            staging.mkdir(parents=True, exist_ok=True)
            with repo.temp_worktree(commit, worktrees_dir(self.layout), "bundle.create") as worktree:
                result = self._fill(repo, RepoLayout.at(worktree), commit, options, staging)
        finally:
            repo.close()
        staging.replace(final)
        result.path = final
        if tar:
            digest = archive.write_tar(final, tar, final.name)
            shutil.rmtree(final)
            result.path = tar
            self.log(f"wrote {tar} (sha256 {digest})")
            if options.split:
                result.parts = archive.split(tar, options.split)
                result.path = result.parts[0]
                self.log(f"cut into {len(result.parts)} parts; join with: {archive.join_instructions(tar)}")
        return result

    def _fill(self, repo: GitRepo, tree: RepoLayout, commit: str, options: CreateOptions, out: Path) -> CreateResult:
        envs = [environments.get(tree, name) for name in options.envs]
        fetcher = Fetcher(mirror=Mirror.from_option(options.mirror), environ=self.environ)
        share_tools(self.layout, tree)
        prepare_vendored(self.layout, tree, fetcher)

        # The images first: what most often fails (a registry, a credential) fails early.
        self.log("images: reading the inventory of " + ", ".join(e.name for e in envs))
        inventories = image_inventory.inventories(tree, envs, self.log)
        problems = [f"{inv.environment}: {finding.message}" for inv in inventories for finding in inv.errors]
        if problems:
            raise InputError("the image inventory has errors:\n" + "\n".join(problems))
        registries = {inv.environment: inv.registry for inv in inventories}
        wanted: dict[str, set[str]] = {}
        for inv in inventories:
            for item in inv.images:
                wanted.setdefault(item.image, set()).add(inv.environment)
        images, fetched, left_out, left_to_base = self._images(sorted(wanted), wanted, registries, options, out)

        path = promotion.load(tree)
        record = content.write_repo_bundle(repo, commit, path, promotion.has_origin(repo), out)
        self.log(f"repository: {content.REPO_BUNDLE} ({len(record.tags)} promotion tags)")
        charts = content.write_charts(VersionsLock.load(tree.lock_file), fetcher, out)
        self.log(f"charts: {len(charts)} archives")
        tools = content.write_tools(load_manifest(tree), [self.layout.tools_bin, tree.tools_bin], out)
        self.log(f"tools: {', '.join(t.name for t in tools)}")
        wheels = content.write_wheels(tree.root / "pyproject.toml", options.site_python, out, self.environ)
        self.log(f"wheels: {len(wheels)} for Python {options.site_python.version}")

        document: dict[str, Any] = {
            "format": FORMAT,
            "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "source": {"commit": commit, "branch": record.branch, "tags": record.tags,
                       "tag": next((t for t in reversed(record.tags) if repo.resolve(t) == commit), "")},
            "environments": [{"name": e.name, "registry": registries.get(e.name)} for e in envs],
            "platforms": [str(p) for p in options.platforms] if options.platforms is not None else "all",
            "repo": content.REPO_BUNDLE,
            "charts": [c.as_json() for c in charts],
            "tools": [t.as_json() for t in tools],
            "wheels": {"python": options.site_python.version, "platforms": list(options.site_python.platforms),
                       "requirements": f"{content.WHEELS_DIR}/{content.REQUIREMENTS}",
                       "files": [w.as_json() for w in wheels]},
            "images": images,
            **({"base": base_record(options.base, left_to_base)} if options.base else {}),
        }  # fmt: skip
        atomic.write_text(out / BUNDLE_JSON, json.dumps(document, indent=2) + "\n")
        # Leftovers of an earlier try that this one did not write again are not part of it.
        for partial in (out / IMAGES_DIR).rglob("*.partial"):
            partial.unlink()
        sums.write(out)
        return CreateResult(out, commit, len(images), sum(i["size"] for i in images), fetched, left_out)

    def _images(
        self,
        names: list[str],
        wanted: dict[str, set[str]],
        registries: Mapping[str, str | None],
        options: CreateOptions,
        out: Path,
    ) -> tuple[list[dict[str, Any]], int, dict[str, list[str]], int]:
        layout = ImageLayout(out / IMAGES_DIR, [options.base / IMAGES_DIR] if options.base else [])
        client = RegistryClient(self.environ)
        refs = {name: parse_image(name) for name in names}
        plans = [
            layout.plan(client, image_source(refs[name], self.environ), options.platforms, refs[name].tag, name)
            for name in names
        ]
        missing = layout.missing_bytes(plans)
        self.log(f"images: {len(names)}, {missing / 1e6:.1f} MB of blobs to fetch ({options.workers} at a time)")
        progress = ByteProgress(missing, "images")
        try:
            reports = layout.fetch(client, plans, options.workers, progress.advance)
        finally:
            progress.close()
        records: list[dict[str, Any]] = []
        entries = []
        fetched = 0
        left_out: dict[str, list[str]] = {}
        for number, (name, report) in enumerate(zip(names, reports, strict=True), start=1):
            image = refs[name]
            entries.append(report.entry)
            fetched += report.fetched_bytes
            if report.left_out:
                left_out[name] = report.left_out
            kept = [str(p) for p in options.platforms] if report.entry.upstream_digest and options.platforms else []
            records.append(
                {
                    "image": name,
                    "pulled": report.entry.upstream_digest or report.entry.descriptor.digest,
                    "digest": report.entry.descriptor.digest,
                    "mediaType": report.entry.descriptor.media_type,
                    "platforms": report.platforms or kept,
                    "leftOut": report.left_out,
                    "size": report.size,
                    "site": {
                        env: str(site_reference(image, registry)) if registry else None
                        for env, registry in sorted(registries.items())
                        if env in wanted[name]
                    },
                }
            )
            cut = f"; left out {', '.join(report.left_out)}" if report.left_out else ""
            self.log(
                f"  [{number}/{len(names)}] {name}: {report.fetched} blobs fetched "
                f"({report.fetched_bytes / 1e6:.1f} MB), {report.present} present{cut}"
            )
        layout.write_index(entries)
        own = {d.digest for plan in plans for d in plan.blobs.values() if layout.blob_path(d.digest).is_file()}
        left_to_base = len({d.digest for plan in plans for d in plan.blobs.values()} - own)
        return records, fetched, left_out, left_to_base
