"""Supply-chain evidence: SBOMs, provenance, DSSE signatures, and checking them (issue 14).

``facts`` (what one .deb says about itself, cached) → ``inventory`` (one
image's packages, relationships, sources) → ``spdx`` / ``cyclonedx`` /
``provenance`` documents → ``statement`` (in-toto) → ``dsse`` envelopes signed
with ``keys``; ``status`` reads an image's dpkg database back and ``verify``
judges evidence against an image. docs/SUPPLY-CHAIN.md describes the outputs.
"""
