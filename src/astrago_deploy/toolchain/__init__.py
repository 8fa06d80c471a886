"""The pinned helm, helmfile and kubectl: the manifest (`toolchain.yaml`), verified install
from ordered sources, version checks, and running them with isolated state and an allowlisted environment."""
