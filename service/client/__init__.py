"""The client: upload, download, list and delete files on a running files service, from the command line
or from Python (`service.client.transfer`: `upload_file`, `download_file`)."""


class ClientError(Exception):
    """A failure on the client's side (a changed local file, a corrupt download), told to the user as it is."""
