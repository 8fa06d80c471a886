"""Rendering environments offline (the content-keyed cache), reading rendered manifests
(documents, identities, images, Secret scrubbing), and diffs between renders."""
