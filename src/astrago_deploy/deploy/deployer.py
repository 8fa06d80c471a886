"""Deploying: a thin, checked wrapper around `helmfile apply` / `helmfile destroy`.

Before anything runs: what is checked out must be deployable for the environment (HEAD is the
tip of the stage branch it deploys from, or carries one of that stage's promotion tags; see
`checked_out_commit`), the vendored charts must pass charts.verify, the environment must name
its kube context, and that context must be the current one (so a deploy meant for dev never
reaches prod). The command runs the same helmfile, post-renderer and vendored charts that
`inv render` reviews. It streams: helmfile's output is shown as it comes and kept whole in
`.cache/logs/<timestamp>-helmfile.log`, whose path and tail a failure names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TextIO

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.command import Command, CommandResult, Timeouts
from astrago_deploy.core.diagnostics import format_diagnostic
from astrago_deploy.core.errors import AstragoError, InputError, KubectlError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.locks import charts_lock
from astrago_deploy.model import environments, promotion
from astrago_deploy.model.releases import TIERS, declared_releases
from astrago_deploy.toolchain.pinned import PinnedTools

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class CheckedOut:
    """Which commit a deploy deploys and why it may (`line`), or that --allow-ref let it through."""

    line: str
    overridden: bool = False


@dataclass(frozen=True)
class DeployPlan:
    env: str
    context: str
    selector: str
    command: Command
    layout: RepoLayout
    checkout: CheckedOut | None = None  # None for destroy

    def describe(self) -> str:
        return " ".join(self.command.argv)

    def run(self, out: TextIO | None = None, err: TextIO | None = None) -> CommandResult:
        """Run helmfile, showing its output live (default: this process's stdout and stderr).

        The charts lock is held shared while helmfile reads charts/external; hold it around
        `plan` and `run` together (see `tasks/deploy.py`) so what is deployed is what was verified.
        """
        with charts_lock(self.layout).shared(f"helmfile {self.command.argv[-1]}"):
            return self.command.stream(self.layout.command_log("helmfile"), out, err)


def checked_out_commit(layout: RepoLayout, env_name: str, allow_ref: bool = False) -> CheckedOut:
    """Which commit is deployed and why it may be; raises `InputError` when it may not be.

    HEAD must be the tip of the stage branch `env_name` deploys from (origin's where there is an
    origin; a customer site's is the last stage's) or carry that stage's promotion tag. With
    `allow_ref` any commit is deployed, and the line is a warning naming it. Nothing is fetched:
    the stage refs are read as they stand (`git fetch` first to deploy what origin holds now).
    """
    path = promotion.load(layout)
    stage = path.deploys_from(layout, env_name)
    override = "--allow-ref deploys it anyway"
    repo = GitRepo.find(layout.root)
    if repo is None:
        if allow_ref:
            return CheckedOut(f"warning: --allow-ref: deploying {layout.root}, which is not a git checkout", True)
        raise InputError(
            f"refusing to deploy {env_name}: {layout.root} is not a git checkout, so which commit it holds "
            f"cannot be told; {override}"
        )
    head = promotion.tip(repo, repo.resolve("HEAD"))
    remote = promotion.has_origin(repo)
    why = promotion.deployable(repo, stage, head.sha, remote)
    if why:
        return CheckedOut(f"deploying {head.sha[:12]} ({head.subject}): {why}")
    ref = promotion.branch_ref(repo, stage, remote)
    shown = ref.removeprefix("refs/remotes/").removeprefix("refs/heads/")
    if allow_ref:
        return CheckedOut(
            f"warning: --allow-ref: deploying {head.sha[:12]} ({head.subject}), which is not the tip of "
            f"{shown} and carries no {stage.name} promotion tag",
            True,
        )
    source = f"{shown}, which {env_name} deploys from"
    if stage.name != env_name:
        source += " (a customer site: the last stage)"
    tip = repo.ref_value(ref)
    if not tip:
        raise InputError(
            f"refusing to deploy {env_name}: HEAD is {head.sha[:12]}, but there is no branch {source}; create "
            f"the stage branches with `inv env.branches`, or {override}"
        )
    checkout = f"git fetch origin && git checkout {shown}" if remote else f"git checkout {stage.branch}"
    if stage == path.first:
        promote = f"merge it into {stage.branch}"
    else:
        promote = f"promote it (`inv env.promote {stage.name} --commit {head.sha[:12]}`)"
    raise InputError(
        f"refusing to deploy {env_name}: HEAD is {head.sha[:12]}, not the tip of {source} ({tip[:12]}), and "
        f"carries no {stage.name} promotion tag; check out that tip (`{checkout}`) or {promote}; {override}"
    )


def selector(tier: str | None, app: str | None, layout: RepoLayout) -> str:
    parts = []
    if tier:
        if tier not in TIERS:
            raise InputError(f"invalid --tier {tier!r}: one of {', '.join(TIERS)}")
        parts.append(f"tier={tier}")
    if app:
        if not _LABEL_VALUE.match(app):
            raise InputError(f"invalid --app {app!r}")
        declared = declared_releases(layout)
        known = {r.name for r in declared} | {r.labels["app"] for r in declared if r.labels.get("app")}
        if app not in known:
            raise InputError(f"no release has app={app}; known: {', '.join(sorted(known))}")
        parts.append(f"app={app}")
    return ",".join(parts)


def current_context(tools: PinnedTools) -> str:
    try:
        return tools.run("kubectl", ["config", "current-context"], timeout=Timeouts.TOOL_QUERY).strip()
    except KubectlError as exc:
        raise AstragoError(
            f"no current kube context ({exc.stderr.strip() or 'kubectl config current-context failed'})"
        ) from exc


def has_helm_diff(tools: PinnedTools) -> bool:
    listing = tools.run("helm", ["plugin", "list"], timeout=Timeouts.TOOL_QUERY)
    return any(line.split()[:1] == ["diff"] for line in listing.splitlines()[1:])


def plan(
    layout: RepoLayout,
    env_name: str,
    action: str,
    tier: str | None = None,
    app: str | None = None,
    tools: PinnedTools | None = None,
    allow_ref: bool = False,
) -> DeployPlan:
    """Check everything, then build the helmfile command; raises with what to fix.

    `apply` and `sync` first check what is checked out (`checked_out_commit`; `allow_ref` lets
    any commit through with a warning); `destroy` deploys nothing, so it does not.

    `apply` (diff, then upgrade what changed) needs the helm-diff plugin in the isolated
    HELM_PLUGINS folder; `sync` upgrades every selected release without a diff.
    """
    if action not in ("apply", "sync", "destroy"):
        raise InputError(f"unknown action {action!r}")
    env = environments.get(layout, env_name)
    checkout = checked_out_commit(layout, env_name, allow_ref) if action != "destroy" else None
    environments.check_value_files(layout, env)
    labels = selector(tier, app, layout)
    problems = ChartVendor(layout, Fetcher()).verify()
    if problems:
        details = "\n".join(format_diagnostic(p) for p in problems)
        raise AstragoError(f"refusing to {action} {env_name}: charts.verify failed:\n{details}")
    context = str(environments.setting(layout, env, "cluster.kubeContext") or "")
    if not context:
        raise AstragoError(f"refusing to {action} {env_name}: cluster.kubeContext is not set for this environment")
    tools = tools or PinnedTools(layout)
    if action == "apply" and not has_helm_diff(tools):
        plugins = tools.env()["HELM_PLUGINS"]
        raise AstragoError(
            f"refusing to apply {env_name}: `helmfile apply` needs the helm-diff plugin, which is not installed in "
            f"{plugins}; install it there (`HELM_PLUGINS={plugins} .tools/bin/helm plugin install PATH-OR-URL`) "
            "or deploy with --sync (helmfile sync, no diff)"
        )
    current = current_context(tools)
    if current != context:
        raise AstragoError(
            f"refusing to {action} {env_name}: the current kube context is {current!r}, but {env_name} deploys to "
            f"{context!r}; switch with `kubectl config use-context {context}`"
        )
    args = ["-f", str(layout.helmfile), "-e", env_name, "--kube-context", context]
    if labels:
        args += ["-l", labels]
    # Charts are vendored: never `helm dependency build` or a repo refresh at deploy time.
    args += ["--skip-deps", action]
    command = tools.command("helmfile", args, cwd=layout.root, timeout=Timeouts.HELMFILE_DEPLOY)
    return DeployPlan(env_name, context, labels, command, layout, checkout)
