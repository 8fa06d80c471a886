"""Plumbing every capability uses, and the one owner of each shared concept: errors, the
command gateway, atomic writes, the console and progress events, git, HTTP (fetching with
retries, mirrors, credentials, `host_port`), YAML files, content digests (`sha256_file`,
`tree_digest`), the repository layout and the GitHub API. Imports no other subpackage."""
