"""From verified packages to OCI images: deterministic layers, manifests, indexes and archives."""
