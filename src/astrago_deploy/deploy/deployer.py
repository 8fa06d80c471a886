"""Deploying: a thin, checked wrapper around `helmfile apply` / `helmfile destroy`.

Before anything runs: the vendored charts must pass charts.verify, the environment must name
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
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.locks import charts_lock
from astrago_deploy.model import environments
from astrago_deploy.model.releases import TIERS, declared_releases
from astrago_deploy.toolchain.pinned import PinnedTools

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class DeployPlan:
    env: str
    context: str
    selector: str
    command: Command
    layout: RepoLayout

    def describe(self) -> str:
        return " ".join(self.command.argv)

    def run(self, out: TextIO | None = None, err: TextIO | None = None) -> CommandResult:
        """Run helmfile, showing its output live (default: this process's stdout and stderr).

        The charts lock is held shared while helmfile reads charts/external; hold it around
        `plan` and `run` together (see `tasks/deploy.py`) so what is deployed is what was verified.
        """
        with charts_lock(self.layout).shared(f"helmfile {self.command.argv[-1]}"):
            return self.command.stream(self.layout.command_log("helmfile"), out, err)


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
) -> DeployPlan:
    """Check everything, then build the helmfile command; raises with what to fix.

    `apply` (diff, then upgrade what changed) needs the helm-diff plugin in the isolated
    HELM_PLUGINS folder; `sync` upgrades every selected release without a diff.
    """
    if action not in ("apply", "sync", "destroy"):
        raise InputError(f"unknown action {action!r}")
    env = environments.get(layout, env_name)
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
    return DeployPlan(env_name, context, labels, command, layout)
