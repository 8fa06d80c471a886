"""Tasks: the air-gap bundle (create where there is a network, verify and load at the site)."""

from __future__ import annotations

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from astrago_deploy.cli import layout_of, say, user_errors
from astrago_deploy.core.errors import InputError


@task(
    iterable=["env", "platform"],
    help={
        "env": "Environment whose images, charts and repository the site needs (repeatable)",
        "ref": "Commit to bundle (default: the last stage's branch tip, else HEAD)",
        "out": "Bundle folder to create, or FILE.tar for one tar",
        "platform": (
            "os/arch of the images to carry (repeatable; default linux/amd64; `all` keeps indexes whole,"
            " as an image pinned by digest always is)"
        ),
        "split": "Cut the tar into parts of at most SIZE (e.g. 4G, 700M) for size-limited media",
        "workers": "Blobs fetched in parallel (default 6)",
        "python": "Python version of the site the wheels are for (default: this one's)",
        "mirror": "Chart mirror (default CHARTS_MIRROR) for the chart archives",
        "base": "An earlier bundle folder: write an incremental bundle without the image blobs it has",
    },
)
@user_errors
def create(
    ctx: Context,
    env: list[str],
    out: str,
    ref: str | None = None,
    platform: list[str] | None = None,
    split: str | None = None,
    workers: int = 6,
    python: str | None = None,
    mirror: str | None = None,
    base: str | None = None,
) -> None:
    """Pack repository, charts, tools, wheels and every image of --env from REF into --out (IMAGE_MIRROR)."""
    from pathlib import Path

    from astrago_deploy.bundle import archive, content
    from astrago_deploy.bundle.create import DEFAULT_PLATFORMS, BundleCreator, CreateOptions
    from astrago_deploy.registry.manifest import Platform

    platforms: list[Platform] | None
    if platform and "all" in platform:
        if len(platform) > 1:
            raise InputError("--platform all keeps every platform: give it alone")
        platforms = None
    else:
        try:
            platforms = [Platform.parse(p) for p in platform] if platform else list(DEFAULT_PLATFORMS)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    if workers < 1:
        raise InputError("--workers must be at least 1")
    site = content.SitePython(python) if python else content.SitePython()
    options = CreateOptions(
        env,
        Path(out).resolve(),
        ref,
        platforms,
        archive.parse_size(split) if split else None,
        workers,
        mirror,
        site,
        Path(base).resolve() if base else None,
    )
    result = BundleCreator(layout_of(ctx), say).run(options)
    for image, left in sorted(result.left_out.items()):
        say(f"left out of {image}: {', '.join(left)} (give --platform to carry them, or --platform all)")
    say(
        f"bundle of {result.commit[:12]}: {result.images} images ({result.image_bytes / 1e6:.1f} MB, "
        f"{result.fetched_bytes / 1e6:.1f} MB fetched now) in {result.path}"
    )


@task(
    help={
        "json": "Print the evidence as JSON",
        "extract_to": "For a tar: extract into this folder and keep it when the bundle verifies",
        "base": "For an incremental bundle: the folder of the bundle it builds on",
    }
)
@user_errors
def verify(
    ctx: Context, path: str, json_: bool = False, extract_to: str | None = None, base: str | None = None
) -> None:
    """Check a bundle folder or tar: SHA256SUMS, every blob and manifest, bundle.json, the git bundle."""
    import json
    from pathlib import Path

    from astrago_deploy.bundle import verify as verifying

    report = verifying.verify(
        Path(path).resolve(), Path(extract_to).resolve() if extract_to else None, Path(base).resolve() if base else None
    )
    if json_:
        say(json.dumps(report.as_json(), indent=2))
    else:
        say(
            f"{report.path}: {report.files} files ({report.bytes} bytes) checked against SHA256SUMS; "
            f"{report.images} images, {report.manifests} manifests, {report.blobs} blobs ({report.blob_bytes} bytes); "
            f"repository at {report.commit[:12] or '?'}"
        )
    if not report.ok:
        raise InputError(f"{path} does not verify:\n" + "\n".join(f"  {p}" for p in report.problems))
    if not json_:
        say("bundle verified")


@task(
    help={
        "registry": "Site registry HOST[:PORT][/PATH] to push the images to",
        "insecure": "The site registry has a certificate this machine does not trust, or speaks plain HTTP",
        "on_existing": "A tag the site has for another image: skip (default), fail, or overwrite",
        "dry_run": "Only look: report what a load would push",
        "json": "Print the summary as JSON",
        "workers": "Blobs pushed in parallel (default 4)",
        "containerd_config": "Also write DIR/<upstream host>/hosts.toml pointing containerd at REGISTRY",
        "base": "For an incremental bundle: the folder of the bundle it builds on (blobs the site lacks come from it)",
    }
)
@user_errors
def load(
    ctx: Context,
    path: str,
    registry: str,
    insecure: bool = False,
    on_existing: str = "skip",
    dry_run: bool = False,
    json_: bool = False,
    workers: int = 4,
    containerd_config: str | None = None,
    base: str | None = None,
) -> None:
    """Push a verified bundle's images to REGISTRY under their site references (the render's mapping);
    on a Harbor registry, create the missing projects first."""
    import json
    import sys
    from pathlib import Path
    from typing import cast

    from astrago_deploy.bundle import load as loading
    from astrago_deploy.bundle.create import BUNDLE_JSON, IMAGES_DIR
    from astrago_deploy.core.console import ByteProgress
    from astrago_deploy.registry.client import RegistryClient

    root = Path(path).resolve()
    if not (root / IMAGES_DIR).is_dir():
        raise InputError(
            f"{root} is not a bundle folder (no {IMAGES_DIR}/): "
            "extract a tar with `inv bundle.verify FILE.tar --extract-to DIR`"
        )
    if on_existing not in loading.ON_EXISTING:
        raise InputError(f"--on-existing {on_existing!r}: give one of {', '.join(loading.ON_EXISTING)}")
    bases = [Path(base).resolve() / IMAGES_DIR] if base else []
    try:
        incremental = "base" in json.loads((root / BUNDLE_JSON).read_bytes())
    except (FileNotFoundError, ValueError, TypeError):
        raise InputError(f"{root} has no readable {BUNDLE_JSON}: run `inv bundle.verify {path}`") from None
    mode = cast("loading.OnExisting", on_existing)  # checked against ON_EXISTING above
    host = registry.strip().partition("/")[0]
    if insecure:
        print(f"warning: {host}: TLS certificates are not checked (--insecure)", file=sys.stderr)
    bars: list[ByteProgress] = []
    client = RegistryClient(insecure=[host] if insecure else ())
    try:
        report = loading.load(
            root / IMAGES_DIR,
            registry,
            client,
            mode,
            dry_run,
            workers,
            progress=lambda size: bars[0].advance(size),  # noqa: PLW0108 (the bar comes with `starting`)
            bases=bases,
            incremental=incremental,
            starting=lambda total: bars.append(ByteProgress(total, "uploading blobs")),
        )
    finally:
        for bar in bars:
            bar.close()
    if json_:
        say(json.dumps(report.as_json(), indent=2))
    else:
        say(report.summary())
    if containerd_config and not dry_run:
        from astrago_deploy.bundle import containerd
        from astrago_deploy.bundle.oci_layout import ImageLayout
        from astrago_deploy.images.reference import parse_image

        upstreams = {parse_image(entry.source).registry for entry in ImageLayout(root / IMAGES_DIR).entries()}
        folder = Path(containerd_config).resolve()
        plain = client.scheme(host) == "http"  # as the load spoke to it
        written = containerd.write_hosts(folder, upstreams, registry, plain, skip_verify=insecure)
        message = f"containerd: {len(written)} hosts.toml under {folder} (set config_path to it)"
        if json_:  # stdout stays one JSON document
            print(message, file=sys.stderr)
        else:
            say(message)


ns = Collection("bundle", create, verify, load)
