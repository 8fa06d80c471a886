"""Harbor's API beside its registry (`/api/v2.0`): whether a registry is Harbor, and its projects.

Harbor keeps every repository in a project, the repository's first path component, and refuses
a push into a project that does not exist (`NOT_FOUND: project x not found`), so a load creates
the missing ones first. Requests go through the one `RegistryClient` (its TLS, insecure and
credential rules: the host's `ASTRAGO_REPO_<HOST>_USERNAME`/`_PASSWORD`, sent as Basic).

Harbor answers `GET /api/v2.0/systeminfo` without credentials with its version; a plain
registry answers 404 there, which is how one is told from the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from astrago_deploy.core.errors import InputError
from astrago_deploy.registry.client import RegistryClient

API = "/api/v2.0"
# Harbor's rule for a project name (src/common/utils: lowercase, separators between).
PROJECT_NAME = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
MAX_PROJECT_NAME = 255


def harbor_version(client: RegistryClient, registry: str) -> str | None:
    """Harbor's version when `registry` is a Harbor, else None (a plain registry)."""
    status, answer = client.api(registry, "GET", f"{API}/systeminfo", ok=range(200, 600))
    if status != 200 or not isinstance(answer, dict):
        return None
    version = answer.get("harbor_version")
    return version if isinstance(version, str) and version else None


def project_of(repository: str) -> str:
    """The Harbor project of `repository` (its first path component), refused when Harbor
    could not hold it: a repository without a project, or a name Harbor does not take."""
    project, slash, _rest = repository.partition("/")
    if not slash:
        raise InputError(
            f"{repository}: Harbor keeps every repository in a project, and this one has none; "
            "give the registry with a project, as --registry HOST/PROJECT"
        )
    if not PROJECT_NAME.fullmatch(project) or len(project) > MAX_PROJECT_NAME:
        raise InputError(
            f"{repository}: {project!r} is not a name Harbor takes for a project (lowercase letters and "
            "digits, with '.', '_' or '-' between them); give the registry with a project, as --registry HOST/PROJECT"
        )
    return project


def missing_projects(client: RegistryClient, registry: str, projects: Iterable[str]) -> list[str]:
    """Those of `projects` that Harbor does not have, sorted."""
    missing = []
    for project in sorted(set(projects)):
        status, _answer = client.api(
            registry, "HEAD", f"{API}/projects", ok=(200, 404), params=[("project_name", project)]
        )
        if status == 404:
            missing.append(project)
    return missing


def create_project(client: RegistryClient, registry: str, project: str) -> bool:
    """Create `project` (private); False when it exists already (made meanwhile by someone else)."""
    status, _answer = client.api(
        registry,
        "POST",
        f"{API}/projects",
        ok=(201, 409),
        document={"project_name": project, "metadata": {"public": "false"}},
    )
    return status == 201
