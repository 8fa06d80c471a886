"""Rendering environments offline: `helmfile template --skip-deps` with the pinned tools.

One helmfile run per environment (each release passes through scripts/post-render, which
marks where it starts); the stream is split per release. A release whose chart can generate
values (render/generated.py) is rendered once more and only the values the two renders
disagree on are normalized, so renders are byte-identical; Secret values are written as
`sha256:` digests, so a changed value shows in a diff without the value. Documents are sorted
and each release is written to
`rendered/<env>/<release>.yaml`. A content key over every input (helmfile, value layers,
chart trees, patches, tool pins, this code) lets an unchanged environment be skipped.
Environments render in parallel within a memory bound, holding the charts lock shared.
Two renders of one environment at once both succeed: the output folder is swapped in whole.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrago_deploy import __version__
from astrago_deploy.core import atomic, files, yaml
from astrago_deploy.core.command import Timeouts
from astrago_deploy.core.digests import path_digest
from astrago_deploy.core.errors import AstragoError, InputError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.locks import charts_lock
from astrago_deploy.core.parallel import run_jobs
from astrago_deploy.model import environments
from astrago_deploy.model.environments import Environment
from astrago_deploy.model.lock import VersionsLock
from astrago_deploy.model.releases import releases
from astrago_deploy.render.generated import NORMALIZED, chart_random_calls, normalize_generated, random_calls
from astrago_deploy.render.manifests import digest_secret, load_documents
from astrago_deploy.render.stream import RELEASE_MARKER, UNPATCHED_DIR
from astrago_deploy.toolchain.pinned import PinnedTools, run_tmp_dir

KEY_FILE = ".render-key"
# One environment's helmfile run holds helmfile plus up to HELM_CONCURRENCY helm processes
# (90-200 MB each, more for large charts); budget generously per environment.
MEMORY_PER_ENVIRONMENT = 1536 * 1024 * 1024
HELM_CONCURRENCY = 2
# The annotation that makes a document a helm hook (helm 3 post-renders none of them).
_HOOK = "helm.sh/hook"
# helm opens every template's documents with `# Source: CHART/templates/...`.
_SOURCE = re.compile(r"^# Source: ([^/\n]+)/", re.MULTILINE)
_KIND_ORDER = [
    "Namespace",
    "CustomResourceDefinition",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "StorageClass",
    "PersistentVolumeClaim",
    "Service",
    "DaemonSet",
    "Deployment",
    "StatefulSet",
    "Job",
    "CronJob",
    "Ingress",
]


@dataclass
class RenderedRelease:
    name: str
    documents: list[dict[str, Any]]
    normalized: list[str] = field(default_factory=list)  # `Kind/ns/name path` of each generated value replaced


@dataclass
class EnvironmentRender:
    env: str
    seconds: float
    cached: bool
    releases: dict[str, int]  # release -> number of documents
    normalized: dict[str, list[str]]
    out_dir: Path

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "cached": self.cached,
            "documents": self.releases,
            "normalized": self.normalized,
            "output": str(self.out_dir),
        }


def available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # pragma: no cover - non-Linux
        return 4 * 1024**3


def parallelism(count: int) -> int:
    """How many environments to render at once: cores and free memory both bound it."""
    by_memory = max(1, available_memory() // MEMORY_PER_ENVIRONMENT)
    return max(1, min(count, os.cpu_count() or 1, by_memory))


# --- generated values -----------------------------------------------------------------


def _helmfile_generates(layout: RepoLayout) -> bool:
    """True when the helmfile's own templates call a generating function (every release may then)."""
    return any(random_calls(files.read_text(path)) for path in sorted(layout.helmfile_dir.rglob("*.gotmpl")))


def generating_releases(layout: RepoLayout, env: str, names: Iterable[str], tools: PinnedTools) -> list[str]:
    """The releases among `names` whose output may differ between two renders of the same inputs:
    those whose chart calls a generating function, or all when the helmfile templates do."""
    names = sorted(names)
    if _helmfile_generates(layout):
        return names
    charts = {ref.name: ref.chart_dir(layout) for ref in releases(layout, env, tools)}
    return [name for name in names if (chart := charts.get(name)) is None or chart_random_calls(chart)]


def generated_by(layout: RepoLayout, unpatched: Mapping[str, str]) -> list[str]:
    """The releases of a render whose documents a chart that can generate values produced, read
    from helm's `# Source: CHART/...` lines in each release's output (kustomize drops comments,
    so a patched release's are read from its input kept before patching): no `helmfile list`
    is needed. All of them when the helmfile templates can generate. A release whose documents
    name no chart, or a chart this checkout does not hold exactly once, counts as generating: it
    is proven like one."""
    names = sorted(unpatched)
    if _helmfile_generates(layout):
        return names
    charts = _charts_by_name(layout)
    found = []
    for name in names:
        text = unpatched[name]
        sources = set(_SOURCE.findall(text))
        dirs = [charts.get(source) for source in sources]
        if (not sources and text.strip()) or any(d is None or chart_random_calls(d) for d in dirs):
            found.append(name)
    return found


def _charts_by_name(layout: RepoLayout) -> dict[str, Path | None]:
    """Chart name (its Chart.yaml's) -> folder, for the locked and our own charts; None for a
    name two folders share."""
    folders = [layout.chart_dir(c.name, c.version) for c in VersionsLock.load(layout.lock_file).charts()]
    if layout.custom_dir.is_dir():
        folders += sorted(p.parent for p in layout.custom_dir.glob("*/Chart.yaml"))
    found: dict[str, Path | None] = {}
    for folder in folders:
        chart_yaml = folder / "Chart.yaml"
        if not chart_yaml.is_file():
            continue
        name = str(yaml.read_mapping(chart_yaml).get("name") or "")
        found[name] = folder if name not in found else None
    return found


def describe_normalized(items: Iterable[str]) -> str:
    """`Kind/ns/name (path, path); ...` for the `Kind/ns/name path` items of one release."""
    paths: dict[str, list[str]] = {}
    for item in items:
        resource, _, path = item.partition(" ")
        paths.setdefault(resource, []).append(path)
    return "; ".join(f"{resource} ({', '.join(found)})" for resource, found in paths.items())


def sort_key(doc: dict[str, Any]) -> tuple[int, str, str, str, str]:
    kind = str(doc.get("kind", ""))
    meta = doc.get("metadata") or {}
    order = _KIND_ORDER.index(kind) if kind in _KIND_ORDER else len(_KIND_ORDER)
    return (order, kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""), str(doc.get("apiVersion")))


def dump_documents(docs: Sequence[dict[str, Any]]) -> str:
    # Ambiguous strings are quoted: kustomize and the apiserver read back what is reviewed.
    return yaml.dump_all(docs)


def split_releases(stream: str) -> dict[str, str]:
    """Split a `helmfile template` stream at the post-renderer's release markers."""
    chunks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stream.splitlines(keepends=True):
        if line.startswith(RELEASE_MARKER):
            name = line[len(RELEASE_MARKER) :].split()[0]
            current = chunks.setdefault(name, [])
            continue
        if current is not None:
            current.append(line)
    return {name: "".join(lines) for name, lines in chunks.items()}


def _kept_input(kept: Path, release: str) -> str | None:
    """The manifests the post-renderer kept for `release` before patching it (patched releases only)."""
    path = kept / f"{release}.yaml"
    return files.read_text(path) if path.is_file() else None


def _unpatched_documents(
    env: str, release: str, kept_input: str | None, rendered: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """What helm rendered for `release` before any patch: the post-renderer's kept input
    followed by the hooks, which helm 3 never post-renders; without a kept input (a release with
    no patches) the render itself."""
    if kept_input is None:
        return rendered
    hooks = [doc for doc in rendered if _HOOK in ((doc.get("metadata") or {}).get("annotations") or {})]
    return load_documents(kept_input, f"{env}/{release} (before its patches)") + hooks


# --- the content key ------------------------------------------------------------------


def shared_inputs_digest(layout: RepoLayout) -> str:
    """Digest over what every environment's render depends on: this package's code, the
    helmfile, our charts, the patches, the lock and every chart it pins, the tool pins and the
    post-renderer. Computed once per `Renderer.render` call, not once per environment."""
    digest = hashlib.sha256(f"astrago-render {__version__}\n".encode())
    package = Path(__file__).resolve().parent.parent
    for source in sorted(package.rglob("*.py")):
        digest.update(f"{source.relative_to(package).as_posix()} {path_digest(source)}\n".encode())
    inputs = [
        layout.helmfile_dir,
        layout.custom_dir,
        layout.patches_dir,
        layout.lock_file,
        layout.toolchain_manifest,
        layout.root / "scripts" / "post-render",
    ]
    inputs += [layout.chart_dir(c.name, c.version) for c in VersionsLock.load(layout.lock_file).charts()]
    for path in inputs:
        digest.update(f"{path.relative_to(layout.root).as_posix()} {path_digest(path)}\n".encode())
    return digest.hexdigest()


def render_key(layout: RepoLayout, env: Environment, tool_environ: Mapping[str, str], shared: str | None = None) -> str:
    """Digest over everything an environment's render depends on: the shared inputs
    (`shared_inputs_digest`, computed here unless given), the environment's value layers, and
    `tool_environ`: the variables that reach helmfile and can change its output
    (`PinnedTools.render_inputs`), since its templates may read any of them."""
    digest = hashlib.sha256(f"shared {shared or shared_inputs_digest(layout)}\n".encode())
    for name, value in sorted(tool_environ.items()):
        digest.update(f"env {name}={value}\n".encode())
    for path in env.layer_dirs(layout):
        digest.update(f"{path.relative_to(layout.root).as_posix()} {path_digest(path)}\n".encode())
    return digest.hexdigest()


# --- rendering ------------------------------------------------------------------------


@dataclass
class Renderer:
    """Renders the environments of the tree at `layout` with the pinned tools of `tools`."""

    layout: RepoLayout
    tools: PinnedTools
    out_root: Path
    log: Callable[[str], None] = lambda _msg: None
    use_cache: bool = True
    # False renders without the Kustomize patches (to see what they patch).
    patches: bool = True
    # Environment settings set over every layer (`helmfile --state-values-set KEY=VALUE`): the
    # image inventory renders an offline environment with `offline.registry` empty to learn the
    # upstream reference of each image the site registry serves.
    state_values: Mapping[str, str] = field(default_factory=dict)

    def helmfile_stream(self, env: str, only: Sequence[str] = (), extra_env: Mapping[str, str] | None = None) -> str:
        """The `helmfile template` stream of `env`; of the releases named in `only`, if any."""
        selectors = [arg for name in only for arg in ("--selector", f"name={name}")]
        args = [
            "-f",
            str(self.layout.helmfile),
            "-e",
            env,
            *[
                arg
                for key, value in sorted(self.state_values.items())
                for arg in ("--state-values-set", f"{key}={value}")
            ],
            *selectors,
            "template",
            "--skip-deps",
            "--concurrency",
            str(HELM_CONCURRENCY),
        ]
        return self.tools.run(
            "helmfile",
            args,
            cwd=self.layout.root,
            extra_env=self._extra_env() if extra_env is None else extra_env,
            timeout=Timeouts.HELMFILE_TEMPLATE,
        )

    def _extra_env(self) -> dict[str, str]:
        return {} if self.patches else {"ASTRAGO_PATCHES": "off"}

    def release_texts(
        self, env: str, only: Sequence[str] = (), extra_env: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        stream = self.helmfile_stream(env, only, extra_env)
        chunks = split_releases(stream)
        if not chunks and stream.strip():
            raise AstragoError(f"{env}: rendered output carries no release markers (is scripts/post-render wired?)")
        return chunks

    def render_releases(self, env: str) -> dict[str, RenderedRelease]:
        """Each release's documents, sorted, with Secret values as digests. Releases that can
        generate values are rendered a second time: what differs is proven generated and
        normalized (a safety net: our values keep every chart from generating)."""
        with tempfile.TemporaryDirectory(prefix="unpatched-", dir=run_tmp_dir(self.layout.tools_tmp)) as kept:
            chunks = self.release_texts(env, extra_env={**self._extra_env(), UNPATCHED_DIR: kept})
            docs = {name: load_documents(text, f"{env}/{name} (rendered by helmfile)") for name, text in chunks.items()}
            inputs = {name: _kept_input(Path(kept), name) for name in chunks}
            # A patched release's Source lines are in its kept input; its hooks' in the render.
            generating = generated_by(self.layout, {name: (inputs[name] or "") + chunks[name] for name in chunks})
            unpatched = {name: _unpatched_documents(env, name, inputs[name], docs[name]) for name in generating}
        normalized = {name: normalize_generated(docs[name], second) for name, second in self._second(env, unpatched)}
        releases = {}
        for name in sorted(docs):
            shown = [digest_secret(doc, keep=(NORMALIZED,)) for doc in docs[name]]
            releases[name] = RenderedRelease(name, sorted(shown, key=sort_key), normalized.get(name, []))
        return releases

    def _second(
        self, env: str, unpatched: Mapping[str, list[dict[str, Any]]]
    ) -> Iterable[tuple[str, list[dict[str, Any]]]]:
        """(release, its second render) for each release in `unpatched` that a second render
        does not reproduce. The second render is unpatched (no Python or kustomize for it) and
        compared with the first one's unpatched input; a release it does not reproduce is
        rendered once more the way it was first (patched), so normalization compares like
        with like and names exactly the values that are generated."""
        if not unpatched:
            return []
        again = self.release_texts(env, list(unpatched), extra_env={"ASTRAGO_PATCHES": "off"})
        second = {
            name: load_documents(again.get(name, ""), f"{env}/{name} (rendered again by helmfile)")
            for name in unpatched
        }
        differ = [name for name in unpatched if second[name] != unpatched[name]]
        if differ and self.patches:
            again = self.release_texts(env, differ)
            second = {
                name: load_documents(again.get(name, ""), f"{env}/{name} (rendered again by helmfile)")
                for name in differ
            }
        return [(name, second[name]) for name in differ]

    def render_environment(self, env: Environment, shared: str | None = None) -> EnvironmentRender:
        """Render `env` into `out_root/<env>`, or keep the render there if its key matches;
        `shared` is `shared_inputs_digest` when the caller has it already."""
        started = time.monotonic()
        out_dir = self.out_root / env.name
        key = render_key(self.layout, env, self.tools.render_inputs(self._extra_env()), shared)
        key += "" if self.patches else "-unpatched"
        key += "".join(f" {name}={value}" for name, value in sorted(self.state_values.items()))
        summary = _cached_summary(out_dir, key) if self.use_cache else None
        if summary is not None:
            return EnvironmentRender(
                env.name, time.monotonic() - started, True, summary["documents"], summary["normalized"], out_dir
            )
        releases = self.render_releases(env.name)
        self.out_root.mkdir(parents=True, exist_ok=True)
        with atomic.staged_tree(self.out_root, env.name) as staged:
            for name, release in releases.items():
                (staged / f"{name}.yaml").write_text(dump_documents(release.documents), encoding="utf-8")
            counts = {name: len(r.documents) for name, r in releases.items()}
            normalized = {name: r.normalized for name, r in releases.items() if r.normalized}
            (staged / ".summary.json").write_text(
                json.dumps({"documents": counts, "normalized": normalized}, indent=2, sort_keys=True) + "\n",
                encoding="utf-8",
            )
            (staged / KEY_FILE).write_text(key + "\n", encoding="utf-8")
            atomic.replace_dir(staged, out_dir)
        return EnvironmentRender(env.name, time.monotonic() - started, False, counts, normalized, out_dir)

    def render(self, envs: Sequence[Environment]) -> list[EnvironmentRender]:
        if not envs:
            return []
        check_output_root(self.out_root, [env.name for env in envs])
        for env in envs:
            environments.check_value_files(self.layout, env)
        workers = parallelism(len(envs))
        # helm reads charts/external throughout: no sync may swap a chart tree meanwhile.
        with charts_lock(self.layout).shared("render"):
            shared = shared_inputs_digest(self.layout)
            jobs = [(env.name, functools.partial(self.render_environment, env, shared)) for env in envs]
            results, failures = run_jobs(jobs, workers, "render")
        if failures:
            raise AstragoError("render failed:\n" + "\n".join(f"{name}: {exc}" for name, exc in failures))
        return results


def check_output_root(out_root: Path, env_names: Sequence[str]) -> None:
    """Refuse, before anything renders, an output folder that cannot hold the renders: a file
    where it or one of `env_names`' folders belongs, or a file among its parents."""
    fix = "give --out a folder (it is created when missing)"
    if out_root.exists() and not out_root.is_dir():
        raise InputError(f"output folder {out_root} is a file, not a folder: {fix}")
    parent = out_root
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"output folder {out_root} cannot be created: {parent} is a file; {fix}")
    for name in env_names:
        folder = out_root / name
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder} is a file where the render of {name} goes: move it away, or {fix}")


def _cached_summary(out_dir: Path, key: str) -> dict[str, Any] | None:
    """The summary of the render in `out_dir` if it was made for `key`; a damaged one is a miss."""
    try:
        if (out_dir / KEY_FILE).read_text(encoding="utf-8").strip() != key:
            return None
        summary = json.loads((out_dir / ".summary.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: bad JSON or not UTF-8
        return None
    if not isinstance(summary, dict) or not all(isinstance(summary.get(k), dict) for k in ("documents", "normalized")):
        return None
    return summary


def default_renderer(layout: RepoLayout, out: Path | None, log: Callable[[str], None]) -> Renderer:
    return Renderer(layout, PinnedTools(layout), out or layout.rendered_dir, log)


def select_environments(layout: RepoLayout, names: Sequence[str], all_: bool) -> list[Environment]:
    """`--env` names (in order), or every environment with `--all` or when none is named."""
    if names and all_:
        raise AstragoError("give --env or --all, not both")
    return environments.select(layout, list(names) or None)


def require_vendored(layout: RepoLayout, purpose: str = "render") -> None:
    """Rendering reads vendored charts only: say which are missing rather than fail in helm.

    Checked under the charts lock, so a sync that is vendoring them right now is waited for."""
    with charts_lock(layout).shared(purpose):
        missing = [
            c.dirname
            for c in VersionsLock.load(layout.lock_file).charts()
            if not layout.chart_dir(c.name, c.version).is_dir()
        ]
    if missing:
        raise AstragoError(f"not vendored: {', '.join(missing)}; run `inv charts.sync` (offline: set CHARTS_MIRROR)")
