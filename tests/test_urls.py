"""host[:port] of a URL: one helper behind redaction, credentials and the mirror mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from astrago_deploy.core.http import Fetcher, Mirror, credentials_for, host_port, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://charts.example.org/stable/x.tgz", "charts.example.org"),
        ("https://Charts.Example.ORG:8443/x", "charts.example.org:8443"),
        ("https://user:pw@harbor.local:30002/chartrepo", "harbor.local:30002"),
        ("https://[fd00::5]:8443/x", "[fd00::5]:8443"),
        ("https://[FD00::5]/x", "[fd00::5]"),
        ("http://user:pw@[::1]:5000/v2/", "[::1]:5000"),
        ("oci://127.0.0.1:5000/charts", "127.0.0.1:5000"),
        ("https://host.example:99999/x", "host.example:99999"),
    ],
)
def test_host_port(url: str, expected: str) -> None:
    assert host_port(url) == expected


def test_ipv6_hosts_keep_their_brackets_everywhere(tmp_path: Path) -> None:
    url = "https://user:pw@[fd00::5]:8443/charts/demo-1.0.0.tgz?token=x"
    assert redact_url(url) == "https://[fd00::5]:8443/charts/demo-1.0.0.tgz"
    assert Mirror("https://mirror.local/up").map(url) == "https://mirror.local/up/[fd00::5]:8443/charts/demo-1.0.0.tgz"
    environ = {"ASTRAGO_REPO__FD00__5__8443_USERNAME": "u", "ASTRAGO_REPO__FD00__5__8443_PASSWORD": "p"}
    assert credentials_for(url, environ) == ("u", "p")
    # A directory mirror lays the IPv6 host out as `[fd00::5]:8443/`, and the fetcher reads it there.
    archive = tmp_path / "[fd00::5]:8443" / "charts" / "demo-1.0.0.tgz"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"chart bytes")
    assert Fetcher(mirror=Mirror(str(tmp_path))).get(url) == b"chart bytes"
