"""Registries over the OCI distribution API: the client, credentials, automatic tags, push and pull."""
