"""The repository checks behind `nox -s lint`: yamllint, helm lint, charts.verify, value
overrides against chart defaults, and the one plaintext-secret scanner."""
