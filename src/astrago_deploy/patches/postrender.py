"""The Helm post-renderer every release goes through (see scripts/post-render).

Reads a release's rendered manifests on stdin, applies its Kustomize patches
(patches/<release>/ and patches/<release>/<env>/, see `patching`), and writes the result to
stdout preceded by a marker comment naming the release and environment, so one
`helmfile template` stream can be split per release. The same program runs for
`helmfile template` (inv render) and `helmfile apply` (inv deploy): what is reviewed is what is
deployed. `ASTRAGO_PATCHES=off` skips the patches (patches.check uses it to see what they
patch); `ASTRAGO_UNPATCHED_DIR` (render only) keeps each release's input as it came.

Helm 4 no longer runs an arbitrary executable as `--post-renderer`: there this program must be
wrapped as a `postrenderer/v1` plugin found through HELM_PLUGINS (see README).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from astrago_deploy.core.errors import AstragoError, file_error
from astrago_deploy.patches import kustomize as patching
from astrago_deploy.render.stream import UNPATCHED_DIR, marker
from astrago_deploy.toolchain.environment import tool_environ


def post_render(root: Path, release: str, env: str, manifests: str) -> str:
    if os.environ.get("ASTRAGO_PATCHES", "on") != "off":
        kept = os.environ.get(UNPATCHED_DIR)
        if kept and "/" not in release and not release.startswith("."):
            (Path(kept) / f"{release}.yaml").write_text(manifests, encoding="utf-8")
        tools_bin = Path(os.environ.get("ASTRAGO_TOOLS_BIN") or root / ".tools" / "bin")
        # What helm passed on is already allowlisted; filter again so kubectl is safe however we are run.
        kustomizer = patching.Kustomizer(tools_bin / "kubectl", tool_environ(os.environ))
        manifests = patching.apply(root / "patches", release, env, manifests, kustomizer)
    return marker(release, env) + manifests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="post-render", description=__doc__)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--release", required=True)
    parser.add_argument("--env", required=True)
    args = parser.parse_args(argv)
    manifests = sys.stdin.read()
    try:
        sys.stdout.write(post_render(args.root, args.release, args.env, manifests))
    except (AstragoError, OSError) as exc:
        # helm shows our stderr: one line saying where, and with ASTRAGO_DEBUG=1 the traceback
        # above it. Anything else is a bug and Python prints its traceback anyway.
        if os.environ.get("ASTRAGO_DEBUG") == "1":
            traceback.print_exc(file=sys.stderr)
        error = file_error(exc) if isinstance(exc, OSError) else exc
        print(f"post-render {args.release} ({args.env}): {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
