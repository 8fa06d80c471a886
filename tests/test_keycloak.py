"""Keycloak on the official image with its realm import, and the two databases: what the real
helmfile renders for dev, prod and the offline stage, an environment that turns a database release
off for an external server, and the README creating every Secret they read."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from astrago_deploy.core.errors import AstragoError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.render.manifests import load_documents
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.toolchain.pinned import PinnedTools

from .conftest import readme_secret_keys
from .test_harbor_secrets import referenced_secrets

RELEASES = ("keycloak-addons", "keycloak-postgresql", "keycloak", "astrago-mariadb", "astrago")
CREDENTIAL_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN)", re.IGNORECASE)


def render(layout: RepoLayout, env: str, only: tuple[str, ...] = RELEASES) -> dict[str, list[dict[str, Any]]]:
    """Each release's documents as the real helmfile renders them for `env`."""
    texts = Renderer(layout, PinnedTools(layout), layout.rendered_dir).release_texts(env, only)
    return {name: load_documents(text, f"{env}/{name}") for name, text in texts.items()}


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found


def container(workload: dict[str, Any]) -> dict[str, Any]:
    [main] = workload["spec"]["template"]["spec"]["containers"]
    return main


def env_of(main: dict[str, Any]) -> dict[str, Any]:
    """Container env by name: the literal value, or the (Secret, key) it is read from."""
    out: dict[str, Any] = {}
    for item in main["env"]:
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        out[item["name"]] = (ref["name"], ref["key"]) if ref else item["value"]
    return out


def literal_credentials(docs: list[dict[str, Any]]) -> list[str]:
    """Env entries named like a credential that carry a literal value instead of a Secret reference."""
    found = []
    for doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for main in spec.get("containers", []) + spec.get("initContainers", []):
            found += [e["name"] for e in main.get("env", []) if CREDENTIAL_NAME.search(e["name"]) and "value" in e]
    return found


def test_dev_runs_keycloak_on_the_official_image_importing_the_realm(synced_project: RepoLayout) -> None:
    docs = render(synced_project, "dev")
    keycloak = one(docs["keycloak"], "Deployment", "keycloak")
    main = container(keycloak)
    assert main["image"] == "quay.io/keycloak/keycloak:26.4.2"
    assert main["args"][0] == "start" and "--import-realm" in main["args"]
    # The realm ConfigMap keycloak-addons renders is the one mounted at the import directory.
    realm = one(docs["keycloak-addons"], "ConfigMap")
    [volume] = keycloak["spec"]["template"]["spec"]["volumes"]
    assert volume["configMap"]["name"] == realm["metadata"]["name"] == "astrago-realm"
    assert {"name": volume["name"], "mountPath": "/opt/keycloak/data/import", "readOnly": True} in main["volumeMounts"]
    # Its client secret is the placeholder the Keycloak container resolves from the client Secret.
    [realm_json] = realm["data"].values()
    [client] = [c for c in json.loads(realm_json)["clients"] if c["clientId"] == "astrago-client"]
    env = env_of(main)
    assert client["secret"] == "${ASTRAGO_CLIENT_SECRET}"
    assert env["ASTRAGO_CLIENT_SECRET"] == ("astrago-keycloak-client", "client-secret")
    # Credentials come from Secrets only; the database account is the one keycloak-postgresql creates.
    assert env["KC_BOOTSTRAP_ADMIN_USERNAME"] == ("keycloak-admin", "username")
    assert env["KC_BOOTSTRAP_ADMIN_PASSWORD"] == ("keycloak-admin", "password")
    postgres = one(docs["keycloak-postgresql"], "StatefulSet")
    db_env = env_of(container(postgres))
    assert env["KC_DB_USERNAME"] == db_env["POSTGRES_USER"] == ("keycloak-db", "username")
    assert env["KC_DB_PASSWORD"] == db_env["POSTGRES_PASSWORD"] == ("keycloak-db", "password")
    assert (env["KC_DB"], env["KC_DB_URL_HOST"], env["KC_DB_URL_PORT"]) == ("postgres", "keycloak-postgresql", "5432")
    assert env["KC_DB_URL_DATABASE"] == db_env["POSTGRES_DB"] == "keycloak"
    assert one(docs["keycloak-postgresql"], "Service", "keycloak-postgresql")["spec"]["ports"][0]["port"] == 5432
    # Dev reaches Keycloak as keycloak.url says, http://10.61.3.10:30001: a NodePort, no proxy in front.
    assert env["KC_HOSTNAME"] == "http://10.61.3.10:30001"
    assert env["KC_HTTP_RELATIVE_PATH"] == "/" and "KC_PROXY_HEADERS" not in env
    service = one(docs["keycloak"], "Service", "keycloak")
    assert service["spec"]["type"] == "NodePort" and service["spec"]["ports"][0]["nodePort"] == 30001
    assert not [d for d in docs["keycloak"] if d["kind"] == "Ingress"]
    # Health on the management port, which only the ClusterIP management Service exposes.
    assert main["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "management", "scheme": "HTTP"}
    assert main["startupProbe"]["httpGet"]["path"] == "/health/started"
    assert main["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    assert one(docs["keycloak"], "Service", "keycloak-management")["spec"]["type"] == "ClusterIP"
    # No Secret is rendered and no password is written anywhere.
    everything = [d for release in docs.values() for d in release]
    assert not [d for d in everything if d["kind"] == "Secret"]
    assert literal_credentials(everything) == []


def test_dev_runs_the_mariadb_astrago_expects(synced_project: RepoLayout) -> None:
    docs = render(synced_project, "dev", ("astrago-mariadb", "astrago"))
    mariadb = one(docs["astrago-mariadb"], "StatefulSet")
    assert mariadb["metadata"]["namespace"] == "astrago"
    main = container(mariadb)
    assert main["image"] == "docker.io/library/mariadb:11.4.7"
    service = one(docs["astrago-mariadb"], "Service", "astrago-mariadb")
    assert service["metadata"]["namespace"] == "astrago" and service["spec"]["ports"][0]["port"] == 3306
    db_env = env_of(main)
    core = env_of(container(one(docs["astrago"], "Deployment", "astrago-core")))
    assert core["SPRING_DATASOURCE_URL"] == f"jdbc:mariadb://astrago-mariadb:3306/{db_env['MARIADB_DATABASE']}"
    assert core["SPRING_DATASOURCE_USERNAME"] == db_env["MARIADB_USER"] == ("astrago-db", "username")
    assert core["SPRING_DATASOURCE_PASSWORD"] == db_env["MARIADB_PASSWORD"] == ("astrago-db", "password")
    assert db_env["MARIADB_ROOT_PASSWORD"] == ("astrago-mariadb-root", "password")
    # Its volume is on the environment's NFS StorageClass, sized by astrago.database.size.
    [claim] = mariadb["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "astrago-nfs-csi"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert literal_credentials(docs["astrago-mariadb"]) == []


def test_prod_serves_keycloak_through_the_ingress_under_auth(synced_project: RepoLayout) -> None:
    docs = render(synced_project, "prod", ("keycloak",))["keycloak"]
    env = env_of(container(one(docs, "Deployment", "keycloak")))
    assert env["KC_HOSTNAME"] == "https://astrago.example.com/auth"
    assert env["KC_HTTP_RELATIVE_PATH"] == "/auth"
    assert env["KC_PROXY_HEADERS"] == "xforwarded"
    assert one(docs, "Service", "keycloak")["spec"]["type"] == "ClusterIP"
    ingress = one(docs, "Ingress", "keycloak")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["astrago.example.com"], "secretName": "astrago-tls"}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "astrago.example.com"
    [path] = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/auth", "Prefix")
    assert path["backend"]["service"] == {"name": "keycloak", "port": {"name": "http"}}


def test_offline_stage_pulls_the_three_images_from_the_site_registry(synced_project: RepoLayout) -> None:
    docs = render(synced_project, "stage", ("keycloak-postgresql", "keycloak", "astrago-mariadb"))
    images = {container(d)["image"] for release in docs.values() for d in release if d["kind"] in ("Deployment", "StatefulSet")}
    assert images == {
        "10.61.3.20:30002/keycloak/keycloak:26.4.2",
        "10.61.3.20:30002/library/postgres:17.6",
        "10.61.3.20:30002/library/mariadb:11.4.7",
    }


EXTERNAL = """
keycloak:
  url: http://10.61.3.10:30001
  database:
    host: pg.corp.example
    port: 6432
astrago:
  database:
    host: mariadb.corp.example
releases:
  keycloak-postgresql: {enabled: false}
  astrago-mariadb: {enabled: false}
"""


def test_a_database_release_turned_off_leaves_its_external_server_to_the_client(synced_project: RepoLayout) -> None:
    values = synced_project.environments_dir / "dev" / "values.yaml"
    values.write_text(values.read_text().replace("keycloak:\n  url: http://10.61.3.10:30001\n", "") + EXTERNAL)
    docs = render(synced_project, "dev")
    assert set(docs) == {"keycloak-addons", "keycloak", "astrago"}
    env = env_of(container(one(docs["keycloak"], "Deployment", "keycloak")))
    assert (env["KC_DB_URL_HOST"], env["KC_DB_URL_PORT"]) == ("pg.corp.example", "6432")
    assert env["KC_DB_PASSWORD"] == ("keycloak-db", "password")
    core = env_of(container(one(docs["astrago"], "Deployment", "astrago-core")))
    assert core["SPRING_DATASOURCE_URL"] == "jdbc:mariadb://mariadb.corp.example:3306/astrago"
    # Nothing waits for a release that is not installed (helmfile would warn about the need).
    built = PinnedTools(synced_project).run("helmfile", ["-f", str(synced_project.helmfile), "-e", "dev", "build"])
    state = next(d for d in load_documents(built, "build") if "releases" in d)
    # helmfile qualifies needs with the environment's kube context.
    needs = {r["name"]: {n.removeprefix("astrago-dev/") for n in r.get("needs") or []} for r in state["releases"]}
    assert needs["keycloak"] == {"keycloak/keycloak-addons"}
    assert not any("mariadb" in need for need in needs["astrago"])


@pytest.mark.parametrize(
    ("keycloak", "releases", "message"),
    [
        # A host while the in-cluster release is on: which database is meant?
        ("  database:\n    host: pg.corp.example\n", "", 'keycloak.database.host is "pg.corp.example" but'),
        # The release off and no host to go to instead.
        ("", "releases:\n  astrago-mariadb: {enabled: false}\n", "astrago.database.host must name the external MariaDB"),
    ],
)
def test_a_contradicting_database_setting_fails_the_render_naming_both(
    synced_project: RepoLayout, keycloak: str, releases: str, message: str
) -> None:
    values = synced_project.environments_dir / "dev" / "values.yaml"
    dev_keycloak = "keycloak:\n  url: http://10.61.3.10:30001\n"
    values.write_text(values.read_text().replace(dev_keycloak, dev_keycloak + keycloak) + releases)
    with pytest.raises(AstragoError, match=re.escape(message)):
        render(synced_project, "dev", ("keycloak", "astrago"))


def test_every_secret_keycloak_and_the_databases_read_is_created_in_the_readme(synced_project: RepoLayout) -> None:
    docs = render(synced_project, "prod")
    read: dict[str, set[str]] = {}
    for release in docs.values():
        for name, keys in referenced_secrets(release).items():
            read.setdefault(name, set()).update(keys)
    assert {"keycloak-admin", "keycloak-db", "astrago-keycloak-client", "astrago-db", "astrago-mariadb-root"} <= set(read)
    for name, keys in read.items():
        created = readme_secret_keys(name)
        assert created is not None, f"README Secrets creates no {name}"
        assert keys <= created, f"{name}: README creates {sorted(created)}, the pods read {sorted(keys)}"
    # Keycloak's ingress names the TLS Secret in its own namespace.
    assert readme_secret_keys("astrago-tls", "keycloak") == {"tls.crt", "tls.key"}
