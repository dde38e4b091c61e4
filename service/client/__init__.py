"""The command-line client: upload, download, list and delete files on a running files service."""


class ClientError(Exception):
    """A failure on the client's side (a changed local file, a corrupt download), told to the user as it is."""
