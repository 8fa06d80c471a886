"""Plumbing every capability uses: errors, the command gateway, atomic writes, the console,
git, HTTP, YAML, digests, the repository layout and the GitHub API."""
