"""The files service: resumable uploads into a deduplicating content-addressed store."""
