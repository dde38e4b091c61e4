"""The upload core: the rules (names, permissions, offsets, digests), independent of any protocol or store."""
