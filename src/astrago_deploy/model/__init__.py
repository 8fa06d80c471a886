"""What the repository declares: environments and their value layers, releases, and the chart lock."""
