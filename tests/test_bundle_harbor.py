"""Loading into a Harbor site, and into a site registry with a certificate nobody trusts.

Harbor is played by a loopback proxy in front of a real registry that answers Harbor's API
(`/api/v2.0/systeminfo`, `HEAD`/`POST /api/v2.0/projects`, Basic credentials) and, as Harbor
does, refuses every registry request into a project it does not have. The insecure cases use
the real registry serving HTTPS with a self-signed certificate made here by openssl.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from astrago_deploy.bundle.load import load
from astrago_deploy.core.errors import AstragoError, InputError
from astrago_deploy.core.http import host_env_key
from astrago_deploy.registry import harbor
from astrago_deploy.registry.client import RegistryClient
from astrago_deploy.registry.errors import AccessDeniedError
from astrago_deploy.registry.reference import Reference

from .registry_support import Proxy, RegistryProcess
from .test_bundle_layout import upstream  # noqa: F401 (a fixture)
from .test_bundle_load import EXPECTED, catalog, layout, pristine, site  # noqa: F401 (fixtures)
from .test_upgrade import inv

VERSION = "v2.11.1-fake"
USER, PASSWORD = "robot$loader", "canary-harbor-7f3c9e"


@dataclass
class FakeHarbor(Proxy):
    """Harbor's API and project rule in front of the registry at `upstream`."""

    projects: set[str] = field(default_factory=lambda: {"library"})
    api_calls: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # "POST project" and "PUT blob" as they came

    def _forward(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        if parts.path.startswith("/api/v2.0/"):
            self._api(request, parts.path.removeprefix("/api/v2.0"), parse_qs(parts.query))
            return
        repository = parts.path.removeprefix("/v2/").split("/blobs/")[0].split("/manifests/")[0]
        if parts.path.startswith("/v2/") and "/" in repository.strip("/"):
            project = repository.split("/")[0]
            if project not in self.projects:
                self._answer(
                    request, 404, {"errors": [{"code": "NOT_FOUND", "message": f"project {project} not found"}]}
                )
                return
        if request.command == "PUT" and "/blobs/uploads/" in parts.path:
            self.order.append("PUT blob")
        super()._forward(request)

    def _api(self, request: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]]) -> None:
        self.api_calls.append(f"{request.command} {path}")
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        if path == "/systeminfo" and request.command == "GET":
            self._answer(request, 200, {"harbor_version": VERSION, "auth_mode": "db_auth"})
            return
        if path != "/projects":
            self._answer(request, 404, {"errors": [{"code": "NOT_FOUND", "message": "no such API"}]})
            return
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            self._answer(request, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "unauthorized"}]})
            return
        if request.command == "HEAD":
            self._answer(request, 200 if query.get("project_name", [""])[0] in self.projects else 404, None)
        elif request.command == "POST":
            name = json.loads(body)["project_name"]
            self.order.append("POST project")
            if name in self.projects:
                self._answer(request, 409, {"errors": [{"code": "CONFLICT", "message": f"project {name} exists"}]})
            else:
                self.projects.add(name)
                self._answer(request, 201, None)
        else:
            self._answer(request, 405, None)

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, status: int, document: Any) -> None:
        data = b"" if document is None else json.dumps(document).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)


@pytest.fixture
def harbor_site(site: RegistryProcess) -> Iterator[FakeHarbor]:  # noqa: F811
    fake = FakeHarbor(site.host)
    yield fake
    fake.stop()


def credentials(host: str, password: str = PASSWORD) -> dict[str, str]:
    key = host_env_key(host)
    return {f"ASTRAGO_REPO_{key}_USERNAME": USER, f"ASTRAGO_REPO_{key}_PASSWORD": password}


def test_a_load_into_harbor_creates_the_missing_projects_before_the_first_blob(
    layout: Path,  # noqa: F811
    site: RegistryProcess,  # noqa: F811
    harbor_site: FakeHarbor,
) -> None:
    client = RegistryClient(credentials(harbor_site.host))
    report = load(layout, harbor_site.host, client)
    assert report.harbor == VERSION
    assert report.projects_created == ["nvidia", "team"]  # library is there already
    assert harbor_site.order[:2] == ["POST project", "POST project"] and "PUT blob" in harbor_site.order
    for path, digest in EXPECTED.values():
        served = client.head_manifest(Reference.parse(f"{harbor_site.host}/{path}"))
        assert served is not None and served.digest == digest, path
    assert "Harbor projects created: nvidia, team" in report.summary()
    assert report.as_json()["projects_created"] == ["nvidia", "team"]

    again = load(layout, harbor_site.host, client)
    assert again.projects_created == [] and again.pushed_nothing
    assert again.summary().startswith("nothing to push")


def test_a_dry_run_names_the_projects_it_would_create_and_creates_none(
    layout: Path,  # noqa: F811
    site: RegistryProcess,  # noqa: F811
    harbor_site: FakeHarbor,
) -> None:
    report = load(layout, harbor_site.host, RegistryClient(credentials(harbor_site.host)), dry_run=True)
    assert report.projects_created == ["nvidia", "team"]
    assert "Harbor projects to create: nvidia, team" in report.summary()
    assert "POST /projects" not in harbor_site.api_calls and harbor_site.projects == {"library"}
    assert catalog(site) == []


@pytest.mark.parametrize("password", [None, "wrong-" + PASSWORD])
def test_harbor_refusing_the_credentials_stops_the_load_before_any_push(
    layout: Path,  # noqa: F811
    site: RegistryProcess,  # noqa: F811
    harbor_site: FakeHarbor,
    password: str | None,
) -> None:
    environ = credentials(harbor_site.host, password) if password else {}
    with pytest.raises(AccessDeniedError) as refused:
        load(layout, harbor_site.host, RegistryClient(environ))
    message = str(refused.value)
    assert "HTTP 401" in message and "/api/v2.0/projects" in message
    if password:
        assert "refused" in message and PASSWORD not in message
    else:
        assert f"ASTRAGO_REPO_{host_env_key(harbor_site.host)}_USERNAME" in message
    assert catalog(site) == [] and "PUT blob" not in harbor_site.order


def test_a_plain_registry_is_not_taken_for_harbor(layout: Path, site: RegistryProcess) -> None:  # noqa: F811
    report = load(layout, site.host, RegistryClient({}))
    assert report.harbor == "" and report.projects_created == []
    assert report.as_json()["harbor"] is None


def test_a_repository_harbor_cannot_hold_is_refused_by_name() -> None:
    assert harbor.project_of("nvidia/gpu-operator") == "nvidia"
    with pytest.raises(InputError, match=r"pause: Harbor keeps every repository in a project.*--registry HOST/PROJECT"):
        harbor.project_of("pause")
    with pytest.raises(InputError, match=r"'team__x' is not a name Harbor takes"):
        harbor.project_of("team__x/app")


# --- a site registry with a self-signed certificate, and --insecure -----------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "site.crt", folder / "site.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=site.example",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_site(tmp_path: Path, certificate: tuple[Path, Path]) -> Iterator[RegistryProcess]:
    process = RegistryProcess(tmp_path / "tls-site", tls=certificate)
    yield process
    process.stop()


def tls_catalog(registry: RegistryProcess) -> list[str]:
    status, answer = RegistryClient({}, insecure=[registry.host]).api(registry.host, "GET", "/v2/_catalog")
    assert status == 200
    return list(answer["repositories"])


def test_insecure_speaks_https_to_a_self_signed_registry_and_plain_http_to_one_without_tls(
    layout: Path,  # noqa: F811
    site: RegistryProcess,  # noqa: F811
    tls_site: RegistryProcess,
) -> None:
    secure = RegistryClient({}, insecure=[tls_site.host])
    assert secure.scheme(tls_site.host) == "https"
    report = load(layout, tls_site.host, secure)
    assert report.count("pushed") == 3
    assert sorted(tls_catalog(tls_site)) == ["library/tool", "nvidia/app", "team/multi"]

    plain = RegistryClient({}, insecure=[site.host])
    assert plain.scheme(site.host) == "http"
    load(layout, site.host, plain)
    assert sorted(catalog(site)) == ["library/tool", "nvidia/app", "team/multi"]

    # Not given as insecure, the loopback registry is spoken to over plain HTTP and fails clearly.
    with pytest.raises(AstragoError, match=r"checking tags: 3 failed; nothing was pushed:\n.*HTTP 400"):
        load(layout, tls_site.host, RegistryClient({}), on_existing="overwrite")


def test_inv_bundle_load_insecure_writes_skip_verify_for_containerd(
    layout: Path,  # noqa: F811
    tls_site: RegistryProcess,
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "B"
    shutil.copytree(layout, bundle / "images")
    (bundle / "bundle.json").write_text("{}\n")
    hosts = tmp_path / "certs.d"
    done = inv(tmp_path, "bundle.load", str(bundle), "--registry", tls_site.host, "--insecure",
               "--containerd-config", str(hosts))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"warning: {tls_site.host}: TLS certificates are not checked (--insecure)" in done.stderr
    assert "3 images pushed" in done.stdout
    toml = (hosts / "nvcr.io" / "hosts.toml").read_text()
    assert f'[host."https://{tls_site.host}"]' in toml and "skip_verify = true" in toml
