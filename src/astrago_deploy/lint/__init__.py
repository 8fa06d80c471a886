"""The repository checks behind `nox -s lint`: yamllint, helm lint, charts.verify, overrides and plaintext secrets."""
