"""Errors of the database layer.

Everything the database package raises on purpose derives from
:class:`DatabaseError`:

* :class:`InvalidUpdate` -- something a peer sent (a ``database.update`` or
  ``database.get_updates`` body) is malformed or not allowed on that
  connection. It is also a :class:`~csembed.errors.ProtocolError`. The replica
  never lets it escape :meth:`Replica.receive`: the message is dropped, the
  reason logged and reported as an :class:`UpdateRejected` event, and the
  connection stays usable.
* :class:`StoreError` -- the SQLite file cannot be used (wrong share, wrong
  schema, I/O failure). The transaction in progress was rolled back.
* :class:`LocalWriteError` -- the application asked for a change that cannot be
  made (no such key, key already taken, value not JSON). Nothing was written.
"""

from __future__ import annotations

from csembed.errors import CsembedError, ProtocolError


class DatabaseError(CsembedError):
    """Base class of the database layer's errors."""


class InvalidUpdate(DatabaseError, ProtocolError):
    """A peer's database message is malformed or not allowed; ``field`` names where."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason if field is None else f"{field}: {reason}")
        self.field = field
        self.reason = reason


class StoreError(DatabaseError):
    """The SQLite store cannot be opened or written."""


class LocalWriteError(DatabaseError):
    """A local put, delete or rename cannot be carried out."""
