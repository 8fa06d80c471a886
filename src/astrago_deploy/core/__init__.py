"""Plumbing every capability uses, and the one owner of each shared concept: errors and
diagnostics, reading people's files, the command gateway, bounded parallel jobs, atomic writes,
the console and progress events, git, HTTP (fetching with retries, mirrors, credentials,
`host_port`), YAML, content digests (`sha256_file`, `tree_digest`), the repository layout and
the GitHub API. Imports no other subpackage."""
