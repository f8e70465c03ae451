"""polyarch: minimal, reproducible, multi-architecture tool containers from Debian packages."""

__version__ = "0.1.0"
