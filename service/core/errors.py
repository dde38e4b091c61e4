"""Domain errors: `FilesError`s a client is told about (`service.http.errors` maps each to a response),
and the errors the stores raise through the ports, which the core turns into those or lets through."""

from __future__ import annotations


class FilesError(Exception):
    """Base of every error a client can cause or be told about."""

    code = "error"

    def __init__(self, detail: str, **fields: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields = fields


class InvalidRequest(FilesError):
    code = "invalid_request"


class InvalidConcatenation(InvalidRequest):
    """The parts named for a final upload cannot make it: not parts, not complete, named twice,
    or not adding up to its size. Nothing was consumed."""

    code = "invalid_concatenation"


class InconsistentLength(InvalidRequest):
    """A request gives the upload a length other than the one it has (declared, or implied by the bytes in)."""


class SessionNotFound(FilesError):
    code = "session_not_found"

    def __init__(
        self, detail: str = "no such upload session (unknown, cancelled or expired)", **fields: object
    ) -> None:
        super().__init__(detail, **fields)


class UploadNotFound(SessionNotFound):
    """No such parted upload (unknown, expired, or another principal's)."""

    code = "upload_not_found"

    def __init__(self, detail: str = "no such upload (unknown or expired)", **fields: object) -> None:
        super().__init__(detail, **fields)


class UploadClosed(InvalidRequest):
    """The parted upload was completed or cancelled: it takes no more parts and cannot complete again."""

    code = "upload_closed"


class FileNotFound(FilesError):
    code = "file_not_found"


class OffsetMismatch(FilesError):
    """Upload-Offset differs from the session's offset; carries the current one."""

    code = "offset_mismatch"


class UploadRestarted(OffsetMismatch):
    """The session's acknowledged bytes were lost (its partial data removed by hand, a volume
    replaced): it starts again at offset 0, which the error carries. A protocol in which an offset
    never decreases ends the session instead (`UploadCore.cancel`)."""


class SessionBusy(FilesError):
    """Another request holds the session's lock."""

    code = "session_busy"


class SessionCompleted(FilesError):
    code = "session_completed"


class UploadTooLarge(FilesError):
    """A declared size over the limit, or a chunk that runs past the session's size."""

    code = "too_large"


class DigestMismatch(FilesError):
    code = "digest_mismatch"


class ChecksumMismatch(FilesError):
    """A chunk's bytes do not match the checksum the client sent with them; nothing of it was kept."""

    code = "checksum_mismatch"


class RangeNotSatisfiable(FilesError):
    code = "range_not_satisfiable"


class InsufficientStorage(FilesError):
    code = "insufficient_storage"


class Unavailable(FilesError):
    """A dependency (Redis, the index rebuild) did not answer in time."""

    code = "unavailable"


class Unauthorized(FilesError):
    """No valid bearer token."""

    code = "unauthorized"


class Forbidden(FilesError):
    """The token lacks the action or the bucket."""

    code = "forbidden"


class TooManySessions(FilesError):
    """The token (or client address) has as many open sessions as it may."""

    code = "too_many_sessions"


class BodyStalled(FilesError):
    """The client sent nothing for longer than the stall limit."""

    code = "body_stalled"


class BodyBrokenOff(FilesError):
    """The client went away before its request body was complete."""

    code = "client_disconnected"


class StorageError(Exception):
    """A store could not do what it was asked, through no fault of the client's."""


class StorageFull(StorageError):
    """The storage under a store has no room left."""


class StorageUnavailable(StorageError):
    """The store did not answer (out of reach, timing out, or saying it is overloaded): a request may
    succeed once it is back, and what was acknowledged before is kept."""


class StagingLost(StorageError):
    """A staged upload holds fewer bytes than its session acknowledged: they are lost."""


class OutsideRoot(StorageError):
    """A path would lead out of its store's directory (a name with '..', a planted symbolic link)."""


class BlobMissing(StorageError):
    """No blob of that digest is in the store."""


class CorruptBlob(StorageError):
    """A blob's content no longer hashes to its name (or ends before its size)."""


class LostLease(Exception):
    """The writer no longer holds the session (its lease ran out, or its offset moved)."""


class LostLocks(Exception):
    """A change's locks went before it was counted in the index (their lease ran out, or Redis lost
    its data), and its claim on the content may have gone with them: the index was not changed."""
