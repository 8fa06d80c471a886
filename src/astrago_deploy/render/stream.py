"""The marker protocol of a render stream.

The post-renderer (patches.postrender) writes a marker line before each release's manifests,
so one `helmfile template` stream can be split per release (render.renderer). Kept in its own
small module because the post-renderer imports it once per release: it must load fast.
"""

from __future__ import annotations

RELEASE_MARKER = "# astrago.io/release: "
# Set by `inv render` only: a folder where the post-renderer keeps each patched release's
# manifests as helm passed them, so the render can prove them reproducible without patching a
# second render of them.
UNPATCHED_DIR = "ASTRAGO_UNPATCHED_DIR"


def marker(release: str, env: str) -> str:
    """The line that opens `release`'s manifests in environment `env`."""
    return f"{RELEASE_MARKER}{release} env={env}\n"
