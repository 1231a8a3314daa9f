"""Errors of the directory engine's local layer.

Everything the directory package raises on purpose derives from
:class:`DirectoryError`, so the engine catches one type per call. The
subclasses say which kind of fault it was, and therefore what the engine does
next:

* :class:`RecordError` -- a record value is malformed (came from a peer or a
  corrupt database); the record is left alone.
* :class:`PathError` -- a key cannot be mapped safely onto the disk (``..``,
  control characters, a symlinked component, ...); nothing was touched.
* :class:`ShareUnavailable` -- the share root is missing or is no longer the
  directory the share was created on; the share goes to an error state and
  no deletion is derived from it.
* :class:`StorageLimitError` -- a board or disk limit would be exceeded; its
  ``limit`` attribute names which one.
* :class:`VerificationError` -- received or copied content does not have the
  SHA-256 it should; the temp file was removed, the old file is intact.
* :class:`LocalChangeConflict` -- the file on disk changed since the engine
  last recorded it; nothing was replaced.
* :class:`BloomError`, :class:`SelectionError` -- a bad presence filter from a
  peer, or a bad ignore/partial/subtree setting.
"""

from __future__ import annotations

from csembed.errors import CsembedError


class DirectoryError(CsembedError):
    """Base of every error raised deliberately by :mod:`csembed.directory`."""


class RecordError(DirectoryError):
    """A directory record's key or value is malformed."""


class PathError(DirectoryError):
    """A key cannot be mapped to a safe location inside the share."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"unsafe or unusable path {key!r}: {reason}")
        self.key = key
        self.reason = reason


class ShareUnavailable(DirectoryError):
    """The share root is missing or replaced: an error state, never a mass deletion."""


class StorageLimitError(DirectoryError):
    """Writing would break a storage limit; ``limit`` names it.

    ``limit`` is one of ``"max_file_size"``, ``"quota"``,
    ``"free_space_reserve"`` or ``"disk_full"`` (the disk ran out during a
    write).
    """

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(f"{limit}: {message}")
        self.limit = limit


class VerificationError(DirectoryError):
    """Content did not hash to the expected SHA-256 (or had the wrong size)."""


class LocalChangeConflict(DirectoryError):
    """The local file changed since it was last recorded; it was not replaced."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key!r} changed locally without being recorded: {reason}")
        self.key = key
        self.reason = reason


class ContentChanged(DirectoryError):
    """A file being served changed under the reader; stop sending it."""


class BloomError(DirectoryError):
    """A bloom filter or its parameters are invalid."""


class SelectionError(DirectoryError):
    """An ignore / partial-copy pattern or a subtree setting is invalid."""
