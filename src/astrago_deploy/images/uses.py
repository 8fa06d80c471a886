"""What the inventory records about one place that pulls an image, and what a kind plugin sees.

An `ImageUse` is one field of one rendered resource naming one image (for gpu-operator's driver,
one per node OS): release, resource (`Kind/namespace/name`, `Kind/name` when cluster-scoped),
field path and a note. `place` identifies the field across two renders of an environment (with
and without `offline.registry`), which is how a site reference is checked against its upstream.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Found:
    """An image a kind plugin read from a resource: the reference as the operator will build it,
    the field it comes from (`spec.driver`), and a note (`node OS ubuntu22.04`)."""

    image: str
    field: str
    note: str = ""


@dataclass(frozen=True)
class Unresolved:
    """A field a plugin knows pulls an image it cannot name from the render (a warning)."""

    field: str
    reason: str


@dataclass(frozen=True)
class KindContext:
    """Environment facts a plugin needs: the node operating systems (`cluster.nodeOS`)."""

    node_os: tuple[str, ...] = ("ubuntu22.04",)


@dataclass(frozen=True, order=True)
class ImageUse:
    release: str
    resource: str
    field: str
    note: str
    image: str  # as written in the render (or in images.extra.yaml)
    source: str = dataclasses.field(default="", compare=False)  # the file it was read from, as users see it

    @property
    def place(self) -> tuple[str, str, str, str]:
        return (self.release, self.resource, self.field, self.note)

    @property
    def why(self) -> str:
        """`release Kind/ns/name field[, note]`, the line `--why` prints."""
        text = f"{self.release} {self.resource} {self.field}"
        return f"{text}, {self.note}" if self.note else text
