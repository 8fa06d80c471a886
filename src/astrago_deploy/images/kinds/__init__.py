"""Image plugins, one small module per custom-resource kind whose images an operator starts.

Each module names its `GROUP` and `KIND` and offers `found_images(doc, context)`, the images the
operator will pull for that resource (`images.uses.Found`), or `Unresolved` for
one it knows is pulled but cannot name. Adding a kind is one module listed in `PLUGINS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from astrago_deploy.images.kinds import clusterpolicy, prometheus_operator
from astrago_deploy.images.uses import Found, KindContext, Unresolved

Plugin = Callable[[dict[str, Any], KindContext], Iterable[Found | Unresolved]]

PLUGINS: dict[tuple[str, str], Plugin] = {
    (clusterpolicy.GROUP, clusterpolicy.KIND): clusterpolicy.found_images,
    **{(prometheus_operator.GROUP, kind): prometheus_operator.found_images for kind in prometheus_operator.KINDS},
}


def plugin_for(doc: dict[str, Any]) -> Plugin | None:
    """The plugin for `doc`'s API group and kind, if there is one."""
    group = str(doc.get("apiVersion") or "").rpartition("/")[0]
    return PLUGINS.get((group, str(doc.get("kind") or "")))
