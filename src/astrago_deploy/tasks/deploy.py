"""Tasks: deploy and destroy an environment (checked wrappers around helmfile)."""

from __future__ import annotations

from invoke.context import Context
from invoke.tasks import task

from astrago_deploy.cli import layout_of, say, user_errors, warn
from astrago_deploy.core.errors import InputError

SELECT_HELP = {
    "env": "Environment to act on (its cluster.kubeContext must be the current context)",
    "tier": "Only releases of this tier: infrastructure, monitoring, security, applications",
    "app": "Only releases with this app label",
    "dry_run": "Run every check and print the helmfile command without running it",
}


def _run(
    ctx: Context, env: str, action: str, tier: str | None, app: str | None, dry_run: bool, allow_ref: bool = False
) -> None:
    from astrago_deploy.core.locks import charts_lock
    from astrago_deploy.deploy import deployer as deploying

    layout = layout_of(ctx)
    # One shared hold from charts.verify to the end of helmfile: no sync swaps a chart in between.
    with charts_lock(layout).shared(f"helmfile {action}"):
        plan = deploying.plan(layout, env, action, tier, app, allow_ref=allow_ref)
        if plan.checkout is not None:
            (warn if plan.checkout.overridden else say)(plan.checkout.line)
        context = f"context {plan.context}{', ' + plan.selector if plan.selector else ''}"
        say(f"{action} {env} ({context}): {plan.describe()}")
        if dry_run:
            say("dry run: checks passed, nothing was run")
            return
        result = plan.run()
    say(f"{action} {env}: done; full output in {result.log}")


@task(
    help={
        **SELECT_HELP,
        "sync": "Use `helmfile sync` (no helm-diff plugin needed) instead of `helmfile apply`",
        "allow_ref": "Deploy HEAD even when it is not the stage branch's tip nor promoted there (with a warning)",
    }
)
@user_errors
def deploy(
    ctx: Context,
    env: str,
    tier: str | None = None,
    app: str | None = None,
    dry_run: bool = False,
    sync: bool = False,
    allow_ref: bool = False,
) -> None:
    """Deploy an environment with helmfile apply after the checkout, charts.verify and kube-context checks."""
    _run(ctx, env, "sync" if sync else "apply", tier, app, dry_run, allow_ref)


@task(help={**SELECT_HELP, "yes": "Confirm: destroy really uninstalls the selected releases"})
@user_errors
def destroy(
    ctx: Context, env: str, tier: str | None = None, app: str | None = None, dry_run: bool = False, yes: bool = False
) -> None:
    """Uninstall an environment's releases with helmfile destroy (needs --yes), after the same checks."""
    if not yes and not dry_run:
        raise InputError(f"destroy uninstalls releases of {env}: add --yes to confirm (or --dry-run to check)")
    _run(ctx, env, "destroy", tier, app, dry_run)
