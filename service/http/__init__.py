"""The HTTP protocol in front of the upload core."""
