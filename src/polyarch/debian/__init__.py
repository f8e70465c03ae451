"""Debian archive access: signed repository metadata, dependency resolution, .deb reading."""
