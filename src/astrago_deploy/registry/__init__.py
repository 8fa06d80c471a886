"""The OCI distribution client that charts, the image inventory and the air-gap bundle share.

`reference` parses `host[:port]/path[:tag][@digest]` and decides plain HTTP by address;
`auth` holds the Docker token protocol and the token cache keyed by (registry host, scope);
`manifest` keeps manifests as the exact bytes served; `client` speaks the registry HTTP API v2
over requests (blobs streamed to disk while hashed, resumed with Range, pushes blob -> manifest
-> tag); `copy` moves whole images between repositories and registries. Imports only `core`.
"""
