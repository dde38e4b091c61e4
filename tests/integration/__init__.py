"""Integration tests: the real `files-service serve` processes against a real Redis."""
