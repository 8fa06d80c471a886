"""Invoke entry point: `inv --list`. The tasks live in the astrago_deploy package."""

from pathlib import Path

from astrago_deploy.tasks import build_namespace

ns = build_namespace(Path(__file__).resolve().parent)
