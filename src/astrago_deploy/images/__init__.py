"""The image inventory: every image an environment's cluster pulls, why, and its site reference.

`reference` parses and normalizes image references and computes site references (the one
place the suite does); `collect` reads pod specs, operator env vars and custom resources (one
plugin per kind under `kinds/`); `inventory` merges `images.extra.yaml`, checks offline
environments against their upstream render, and gives the sorted, stable result.
"""
