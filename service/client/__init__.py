"""The command-line client: upload, download, list and delete files on a running files service."""
