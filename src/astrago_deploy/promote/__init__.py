"""Environment promotion dev -> stage -> prod as git branches: status, promote (gated, fast-forward
only, tagged), back-merge of drift, rollback, creating the stage branches. The path and its
state (containment, pending, drift, tags) are `model.promotion`; this package acts on them."""
