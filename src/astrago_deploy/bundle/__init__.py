"""Air-gap bundles: what a disconnected site needs, packed, verified at the site, loaded into its registry."""
