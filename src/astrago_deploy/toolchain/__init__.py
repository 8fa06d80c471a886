"""The pinned helm, helmfile and kubectl: manifest, verified install, checks, and how they are run."""
