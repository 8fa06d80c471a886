"""What of the caller's environment reaches helm, helmfile, kubectl and the post-renderer.

An allowlist, not a denylist: a tool sees only the variables named here (plus the isolated
`HELM_*` state folders, `TMPDIR` and `HELMFILE_UPGRADE_NOTICE_DISABLED` that `PinnedTools`
sets itself). Everything else is dropped, so none of these can change what a tool does or leak
into it: `GITHUB_TOKEN`, every `ASTRAGO_REPO_<HOST>_USERNAME/_PASSWORD`, a user's `HELM_*`
(`HELM_DRIVER`, `HELM_KUBECONTEXT`, `HELM_REPOSITORY_CONFIG`, ...), `HELMFILE_*` (such as
`HELMFILE_ENVIRONMENT` or `HELMFILE_V1MODE`), any other shell variable.

No pinned tool receives credentials: charts and images are fetched by the suite's own registry
and HTTP clients, which read `ASTRAGO_REPO_*` themselves. A process that does need a secret gets
it through `PinnedTools.command(extra_env=...)`, for that one command only.

`ASTRAGO_TOOL_ENV` (comma-separated names) lets a site pass more, e.g. what a kubeconfig `exec`
credential plugin reads (`AWS_PROFILE`); it may not name the suite's own credentials.

helmfile templates can read variables (`env`, `requiredEnv`), so the allowed variables that can
change a render are part of the render cache key (`render_inputs`); the ones that only steer
output to a terminal, logging or timeouts are not.
"""

from __future__ import annotations

from collections.abc import Mapping

from astrago_deploy.core.errors import ConfigError

EXTRA_ENV = "ASTRAGO_TOOL_ENV"
ALLOWED: frozenset[str] = frozenset(
    {
        # the process basics
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "NO_COLOR",
        # the cluster (inv deploy): which kubeconfig; the context is always given by flag
        "KUBECONFIG",
        # reaching the cluster through a proxy, trusting a site CA
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        # the post-renderer (scripts/post-render -> patches/postrender.py) and its kubectl
        "ASTRAGO_PYTHON",
        "ASTRAGO_TOOLS_BIN",
        "ASTRAGO_PATCHES",
        "ASTRAGO_UNPATCHED_DIR",
        "ASTRAGO_DEBUG",
        "ASTRAGO_TIMEOUT_SCALE",
        "ASTRAGO_UNDER_COMMAND",
        # so that the post-renderer, filtering again for its kubectl, keeps the same names
        EXTRA_ENV,
    }
)
ALLOWED_PREFIXES = ("LC_",)
# Allowed, but they change only how output looks, what is logged or how long to wait: never
# what is rendered, so they stay out of the render cache key.
# ASTRAGO_UNPATCHED_DIR is a fresh temporary folder on every render: where the post-renderer
# keeps its input, never what it outputs.
RENDER_NEUTRAL: frozenset[str] = frozenset(
    {"TERM", "NO_COLOR", "ASTRAGO_DEBUG", "ASTRAGO_TIMEOUT_SCALE", "ASTRAGO_UNDER_COMMAND", "ASTRAGO_UNPATCHED_DIR"}
)
# Never passed, even when ASTRAGO_TOOL_ENV names them: the suite's own secrets.
_CREDENTIAL_NAMES = frozenset({"GITHUB_TOKEN", "GH_TOKEN"})
_CREDENTIAL_PREFIX = "ASTRAGO_REPO_"


def is_credential(name: str) -> bool:
    return name in _CREDENTIAL_NAMES or name.startswith(_CREDENTIAL_PREFIX)


def extra_names(environ: Mapping[str, str]) -> frozenset[str]:
    """The names `ASTRAGO_TOOL_ENV` adds to the allowlist; refuses the suite's credentials."""
    names = frozenset(part.strip() for part in environ.get(EXTRA_ENV, "").split(",") if part.strip())
    refused = sorted(name for name in names if is_credential(name))
    if refused:
        raise ConfigError(
            f"{EXTRA_ENV} names {', '.join(refused)}: the suite's credentials never reach helm, helmfile or "
            f"kubectl; remove {'it' if len(refused) == 1 else 'them'} from {EXTRA_ENV}"
        )
    return names


def tool_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of `environ` a pinned tool may see: the allowlist plus `ASTRAGO_TOOL_ENV`'s names."""
    extra = extra_names(environ)
    return {
        name: value
        for name, value in environ.items()
        if name in ALLOWED or name.startswith(ALLOWED_PREFIXES) or name in extra
    }


def render_inputs(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of an already filtered tool environment that can change what is rendered."""
    return {name: value for name, value in environ.items() if name not in RENDER_NEUTRAL}
