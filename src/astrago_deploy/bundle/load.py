"""Loading a bundle's image layout into a site registry (what `bundle.load` runs).

Every image of the layout goes to `images.reference.site_reference(source, registry)`, the one
mapping the render's offline rewrite and the inventory use (upstream host dropped, path kept).

The order is what makes a load safe to interrupt, as in `registry.copy`: every blob first, then
each image's manifests by digest (an index's images before the index), then its tag, so a site
tag never names an incomplete image and a rerun finds with HEAD what an interrupted run pushed
and sends only the rest. A blob reaches each repository that needs it once: found there with
HEAD, else mounted from a repository of the site registry that holds it (one that got it
earlier in the run, or an image of the layout already present there), else streamed from the
layout file. Blobs go in parallel (a bounded pool), each blob's repositories
in turn, so a layer that many images share is uploaded once and mounted for the others.

Nothing is pushed before everything that can refuse the load has been checked: the layout is
verified from its bytes (a damaged one is refused, every problem named), every image's site
reference computed (two different images may not land on one tag), and every tag looked up, so
`on_existing="fail"` refuses before the first byte. After pushing, each pushed tag is read back
and must name the layout's digest. On a Harbor site the missing projects are created just before
the first blob (`registry.harbor`), since Harbor refuses a push into a project it lacks.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from astrago_deploy.bundle.oci_layout import ImageEntry, ImageLayout, verify
from astrago_deploy.core.errors import AstragoError, FetchError, InputError, IntegrityError
from astrago_deploy.core.parallel import run_jobs
from astrago_deploy.images.reference import parse_image, site_reference
from astrago_deploy.registry import harbor
from astrago_deploy.registry.client import RegistryClient
from astrago_deploy.registry.manifest import Descriptor, Manifest
from astrago_deploy.registry.reference import Reference, split_host_port

OnExisting = Literal["skip", "fail", "overwrite"]
ON_EXISTING: tuple[str, ...] = get_args(OnExisting)
# How a blob got into one repository (counted per repository and blob).
UPLOADED, MOUNTED, EXISTING = "uploaded", "mounted", "existing"
# What happened to one image: pushed, already there with the layout's digest, or left as it was.
PUSHED, PRESENT, SKIPPED = "pushed", "present", "skipped"
_T = TypeVar("_T")


@dataclass
class ImageLoad:
    """One image of the layout: where it goes on the site and what the load did with it."""

    source: str
    site: str  # the site reference, with the tag it is pushed under (or the digest, untagged)
    digest: str  # of the manifest (or index) the layout holds, the one the site serves
    outcome: str = ""  # PUSHED, PRESENT or SKIPPED (in a dry run: what a load would do)
    site_digest: str = ""  # what the site tag named before, when that was something else

    def as_json(self) -> dict[str, Any]:
        found = {"source": self.source, "site": self.site, "digest": self.digest, "outcome": self.outcome}
        return found | ({"site_digest": self.site_digest} if self.site_digest else {})


@dataclass
class LoadReport:
    """What a load did (or, in a dry run, would do): per image, and blobs per repository."""

    registry: str
    dry_run: bool = False
    images: list[ImageLoad] = field(default_factory=list)
    blobs: Counter[str] = field(default_factory=Counter)  # UPLOADED / MOUNTED / EXISTING -> count
    bytes_uploaded: int = 0
    manifests_pushed: int = 0
    harbor: str = ""  # the site's Harbor version, when it is one
    projects_created: list[str] = field(default_factory=list)  # Harbor projects (in a dry run: to create)

    def count(self, outcome: str) -> int:
        return sum(1 for image in self.images if image.outcome == outcome)

    @property
    def pushed_nothing(self) -> bool:
        pushed = self.count(PUSHED) or self.blobs[UPLOADED] or self.blobs[MOUNTED] or self.manifests_pushed
        return not (pushed or self.projects_created)

    def summary(self) -> str:
        """One line for the console."""
        would = "would push" if self.dry_run else "pushed"
        if self.pushed_nothing and not self.count(SKIPPED):
            return f"nothing to push: all {len(self.images)} images are present in {self.registry}"
        projects = ""
        if self.projects_created:
            made = "to create" if self.dry_run else "created"
            projects = f"; Harbor projects {made}: {', '.join(self.projects_created)}"
        return (
            f"{self.count(PUSHED)} images {would}, {self.count(PRESENT)} present, {self.count(SKIPPED)} skipped"
            f" (their tag names another image); blobs: {self.blobs[UPLOADED]} uploaded"
            f" ({self.bytes_uploaded} bytes), {self.blobs[MOUNTED]} mounted, {self.blobs[EXISTING]} already there"
            + projects
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "registry": self.registry,
            "dry_run": self.dry_run,
            "pushed_nothing": self.pushed_nothing,
            "images": {outcome: self.count(outcome) for outcome in (PUSHED, PRESENT, SKIPPED)},
            "blobs": {how: self.blobs[how] for how in (UPLOADED, MOUNTED, EXISTING)},
            "bytes_uploaded": self.bytes_uploaded,
            "manifests_pushed": self.manifests_pushed,
            "harbor": self.harbor or None,
            "projects_created": self.projects_created,
            "entries": [image.as_json() for image in self.images],
        }


@dataclass(frozen=True)
class _Plan:
    """One image to load: its site place and everything the layout holds for it."""

    line: ImageLoad
    dest: Reference  # the site repository, with the tag when there is one
    manifests: tuple[Manifest, ...]  # children before their index, the image's own manifest last
    blobs: tuple[Descriptor, ...]

    @property
    def served(self) -> Reference:
        """What the site serves this image under: its tag, else its digest."""
        return self.dest if self.dest.tag else self.dest.at(self.line.digest)


def load(
    layout_root: Path,
    registry: str,
    client: RegistryClient,
    on_existing: OnExisting = "skip",
    dry_run: bool = False,
    workers: int = 4,
    progress: Callable[[int], None] = lambda _size: None,
    bases: Sequence[Path] = (),
    incremental: bool = False,
    starting: Callable[[int], None] = lambda _total: None,
) -> LoadReport:
    """Push every image of the layout at `layout_root` into `registry` (`host[:port][/path]`).

    `on_existing` decides for a tag the site already has naming another digest: leave it
    ("skip", reported), refuse the whole load before pushing anything ("fail"), or push
    ("overwrite"). A tag that already names the layout's digest is left alone ("present").
    `dry_run` only looks (HEAD requests) and reports what a load would push. `progress` is told
    the size of each blob uploaded (a progress bar by bytes), from the pool's threads; `starting`
    is told, before the first blob, how many bytes at most the load uploads (its total)."""
    if on_existing not in ON_EXISTING:
        raise InputError(f"on_existing {on_existing!r}: expected one of {', '.join(ON_EXISTING)}")
    split_host_port(registry.strip().partition("/")[0])
    checked = verify(layout_root, bases=bases, incremental=incremental)
    if checked.problems:
        raise IntegrityError(
            f"{layout_root}: the image layout is damaged, nothing was pushed:\n" + "\n".join(checked.problems)
        )
    layout = ImageLayout(layout_root, bases)
    plans = _plan(layout, registry)
    report = LoadReport(registry, dry_run, [plan.line for plan in plans])
    _check_tags(client, plans, on_existing, workers)
    pushing = [plan for plan in plans if plan.line.outcome == PUSHED]
    present = [plan for plan in plans if plan.line.outcome == PRESENT]
    _harbor_projects(client, registry, pushing, report)
    _push_blobs(client, layout, pushing, present, report, dry_run, workers, progress, starting)
    if dry_run:
        return report
    _run(
        [(plan.line.site, functools.partial(_push_manifests, client, plan)) for plan in pushing],
        workers,
        "pushing manifests",
        "the images named got no new tag; run the load again to resume",
    )
    report.manifests_pushed = sum(len(plan.manifests) + bool(plan.dest.tag) for plan in pushing)
    _read_back(client, pushing, workers)
    return report


def _harbor_projects(client: RegistryClient, registry: str, plans: Sequence[_Plan], report: LoadReport) -> None:
    """On a Harbor site, the projects the images go to are created first (Harbor refuses a push
    into a missing one); in a dry run, only named. A plain registry needs nothing."""
    host = registry.strip().partition("/")[0]
    report.harbor = harbor.harbor_version(client, host) or ""
    if not report.harbor or not plans:
        return
    projects = {harbor.project_of(plan.dest.repository) for plan in plans}
    missing = harbor.missing_projects(client, host, projects)
    if not report.dry_run:
        missing = [project for project in missing if harbor.create_project(client, host, project)]
    report.projects_created = missing


def _source_of(layout: ImageLayout, blob: Descriptor) -> Path:
    """The file to upload `blob` from: the layout's, or its base's for an incremental bundle."""
    found = layout.find_blob(blob)
    if found is None:
        raise IntegrityError(
            f"blob {blob.digest} is left to the base bundle this incremental one builds on, and the site "
            "registry lacks it: load the base bundle first, or give it with --base"
        )
    return found


# --- planning ------------------------------------------------------------------------------------


def _plan(layout: ImageLayout, registry: str) -> list[_Plan]:
    """Each image of the layout with its site reference and content; two images on one tag refused."""
    plans: dict[str, _Plan] = {}
    for entry in layout.entries():
        plan = _plan_image(layout, entry, registry)
        other = plans.get(plan.line.site)
        if other is not None and other.line.digest != plan.line.digest:
            raise InputError(
                f"{other.line.source} and {entry.source} both load to {plan.line.site} but are different images"
                f" ({other.line.digest}, {plan.line.digest}); nothing was pushed"
            )
        plans.setdefault(plan.line.site, plan)
    return list(plans.values())


def _plan_image(layout: ImageLayout, entry: ImageEntry, registry: str) -> _Plan:
    site = site_reference(parse_image(entry.source), registry)
    # The source's tag is the one the render's rewrite asks the site for; the layout's
    # ref.name annotation only names an image whose source is pinned by digest alone. The site
    # serves the layout's digest: the source's own unless platforms were cut from an index
    # (bundle.json records both).
    dest = Reference(site.registry, site.repository, site.tag or entry.tag).checked(str(site))
    digest = entry.descriptor.digest
    manifests: list[Manifest] = []
    blobs: dict[str, Descriptor] = {}

    def collect(descriptor: Descriptor) -> None:
        manifest = layout.read_manifest(descriptor)
        if manifest.is_index:
            for child in manifest.manifests:
                collect(child)
        else:
            for blob in manifest.blobs:
                blobs.setdefault(blob.digest, blob)
        if manifest not in manifests:
            manifests.append(manifest)

    collect(entry.descriptor)
    shown = str(dest) if dest.tag else f"{dest.name}@{digest}"
    return _Plan(ImageLoad(entry.source, shown, digest), dest, tuple(manifests), tuple(blobs.values()))


def _check_tags(client: RegistryClient, plans: Sequence[_Plan], on_existing: OnExisting, workers: int) -> None:
    """Set each image's outcome from what the site serves under its tag; "fail" refuses here
    (in a dry run too: it is what the load would do)."""
    found = _run(
        [(plan.line.site, functools.partial(client.head_manifest, plan.served)) for plan in plans],
        workers,
        "checking tags",
        "nothing was pushed",
    )
    elsewhere = []
    for plan, descriptor in zip(plans, found, strict=True):
        line = plan.line
        if descriptor is None:
            line.outcome = PUSHED
        elif descriptor.digest == line.digest:
            line.outcome = PRESENT
        else:
            line.site_digest = descriptor.digest
            line.outcome = SKIPPED if on_existing == "skip" else PUSHED
            elsewhere.append(f"{line.site} names {descriptor.digest}, the bundle has {line.digest}")
    if elsewhere and on_existing == "fail":
        raise InputError(
            "the site registry has other images under these tags, nothing was pushed"
            " (--on-existing overwrite replaces them, skip leaves them):\n" + "\n".join(elsewhere)
        )


# --- pushing -------------------------------------------------------------------------------------


def _push_blobs(
    client: RegistryClient,
    layout: ImageLayout,
    plans: Sequence[_Plan],
    present: Sequence[_Plan],
    report: LoadReport,
    dry_run: bool,
    workers: int,
    progress: Callable[[int], None],
    starting: Callable[[int], None],
) -> None:
    """The blobs of `plans` into their repositories; an image `present` on the site holds all of
    its blobs (a registry takes no manifest whose blobs it lacks), so they are mounted from it."""
    held = {blob.digest: plan.dest.repository for plan in present for blob in plan.blobs}
    wanted: dict[str, tuple[Descriptor, list[Reference]]] = {}
    for plan in plans:
        for blob in plan.blobs:
            repositories = wanted.setdefault(blob.digest, (blob, []))[1]
            if plan.dest.repository not in {r.repository for r in repositories}:
                repositories.append(plan.dest)
    # Largest first: one big layer started last would leave the other workers idle at the end.
    order = sorted(wanted.values(), key=lambda item: -item[0].size)
    if not dry_run:
        starting(sum(blob.size for blob, _repositories in order if blob.digest not in held))

    def place(blob: Descriptor, repositories: list[Reference]) -> list[str]:
        """`blob` into each of `repositories` in turn: HEAD, else mount from one that has it, else upload."""
        holder = held.get(blob.digest, "")  # a repository of the site registry holding the blob
        hows = []
        for repository in repositories:
            if client.head_blob(repository, blob.digest, push=not dry_run) is not None:
                how = EXISTING
            elif holder:
                how = MOUNTED if dry_run or client.mount_blob(repository, blob.digest, holder) else ""
            else:
                how = ""
            if not how:
                how = UPLOADED
                if not dry_run:
                    pushed = client.push_blob(repository, _source_of(layout, blob), blob.digest)
                    how = EXISTING if pushed.how == "exists" else UPLOADED
                    if how == UPLOADED:
                        progress(blob.size)
            if how != MOUNTED:
                holder = repository.repository
            hows.append(how)
        return hows

    placed = _run(
        [(blob.digest, functools.partial(place, blob, repositories)) for blob, repositories in order],
        workers,
        "pushing blobs",
        "no manifest or tag was pushed; run the load again to resume",
    )
    for (blob, _repositories), hows in zip(order, placed, strict=True):
        report.blobs.update(hows)
        report.bytes_uploaded += blob.size * hows.count(UPLOADED)


def _push_manifests(client: RegistryClient, plan: _Plan) -> None:
    """Each manifest by digest (an index's images before it), then the tag, last."""
    for manifest in plan.manifests:
        client.put_manifest(plan.dest.at(manifest.digest), manifest)
    if plan.dest.tag:
        client.put_manifest(plan.dest, plan.manifests[-1])


def _read_back(client: RegistryClient, plans: Sequence[_Plan], workers: int) -> None:
    """Every pushed tag must name the layout's digest now."""
    found = _run(
        [(plan.line.site, functools.partial(client.head_manifest, plan.served)) for plan in plans],
        workers,
        "reading back",
        "",
    )
    wrong = [
        f"{plan.line.site} ({plan.line.source}) serves {descriptor.digest if descriptor else 'nothing'},"
        f" the bundle has {plan.line.digest}"
        for plan, descriptor in zip(plans, found, strict=True)
        if descriptor is None or descriptor.digest != plan.line.digest
    ]
    if wrong:
        raise IntegrityError("after the load, the site registry does not serve what was pushed:\n" + "\n".join(wrong))


def _run(jobs: list[tuple[str, Callable[[], _T]]], workers: int, what: str, state: str) -> list[_T]:
    """The jobs' results in order; every failure named in one error (one keeps its kind)."""
    if not jobs:
        return []
    results, failures = run_jobs(jobs, max(1, min(workers, len(jobs))), what.replace(" ", "-"))
    if not failures:
        return results
    lines = [str(exc) for _name, exc in failures]
    tail = f"; {state}" if state else ""
    if len(failures) == 1:
        first = failures[0][1]
        # The same kind of failure (a caller may care: integrity or fetch), built from a message.
        kind = next((k for k in type(first).__mro__ if k in (IntegrityError, FetchError, InputError)), AstragoError)
        raise kind(f"{what}: {lines[0]}{tail}") from first
    raise AstragoError(f"{what}: {len(failures)} failed{tail}:\n" + "\n".join(lines))
