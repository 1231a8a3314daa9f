"""Streaming delta generation against a loaded :class:`~csembed.rsync.Signature`.

Feed the new file in chunks to :meth:`DeltaWriter.update` and send on the
bytes each call returns; :meth:`DeltaWriter.finish` returns the rest through
the END command. Memory is the signature plus about one block and one 32 KiB
literal piece, whatever the file size. The search itself (rolling weak sum,
filter, hash table, lazy strong sum, merged COPYs) is in the backend: see
``native/delta.h``.
"""

from __future__ import annotations

from dataclasses import dataclass

from csembed.native.types import BytesLike
from csembed.rsync.signature import Signature


@dataclass(frozen=True)
class DeltaStats:
    """What a delta says: bytes sent literally, bytes copied from the basis, commands."""

    literal_bytes: int
    copy_bytes: int
    commands: int


class DeltaWriter:
    """New-file bytes in, delta bytes out."""

    def __init__(self, signature: Signature) -> None:
        """``signature`` must be finished; the writer uses its backend."""
        self.signature = signature
        self._core = signature.backend.DeltaGenerator(signature.sums)

    def update(self, data: BytesLike) -> bytes:
        """Feed new-file bytes; returns the delta bytes now final."""
        return bytes(self._core.update(data))

    def finish(self) -> bytes:
        """End of the new file; returns the rest of the delta, ending with END."""
        return bytes(self._core.finish())

    @property
    def stats(self) -> DeltaStats:
        """Totals of the commands emitted so far."""
        return DeltaStats(*self._core.stats)
