"""What the repository declares: environments and their value layers (the one discovery
rule, mirroring the helmfile's), declared releases, and the chart lock."""
