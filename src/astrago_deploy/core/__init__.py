"""Plumbing every capability uses: errors and diagnostics, reading people's files, the command
gateway, bounded parallel jobs, atomic writes, the console, git, HTTP, YAML, digests, the
repository layout and the GitHub API."""
