"""The ``database`` extension: a replicated key-value store under directory sync.

Every peer of a share holds every record; changes spread peer to peer, relayed
by read-only peers that cannot forge them, and deleted records stay deleted.

* :mod:`~csembed.database.vector_clock` -- version vectors and their order.
* :mod:`~csembed.database.record` -- one version of a record; checks on peer input.
* :mod:`~csembed.database.store` -- SQLite storage, one file per share.
* :mod:`~csembed.database.replica` -- the sans-I/O protocol engine per share.
* :mod:`~csembed.database.signing` -- Ed25519 sign/verify callables.

``protocol/database.md`` is the specification this package implements.
"""

from csembed.database.errors import DatabaseError, InvalidUpdate, LocalWriteError, StoreError
from csembed.database.record import Limits, Record
from csembed.database.replica import (
    Batch,
    Conflict,
    ConflictKind,
    DatabaseEvent,
    Outgoing,
    RecordChanged,
    Replica,
    Resolution,
    Resolver,
    UpdateRejected,
    Written,
    latest_update_time,
)
from csembed.database.signing import ed25519_signer, ed25519_verifier
from csembed.database.store import Store, share_database_path
from csembed.database.vector_clock import Order, VectorClock

__all__ = [
    "Batch",
    "Conflict",
    "ConflictKind",
    "DatabaseError",
    "DatabaseEvent",
    "InvalidUpdate",
    "Limits",
    "LocalWriteError",
    "Order",
    "Outgoing",
    "Record",
    "RecordChanged",
    "Replica",
    "Resolution",
    "Resolver",
    "Store",
    "StoreError",
    "UpdateRejected",
    "VectorClock",
    "Written",
    "ed25519_signer",
    "ed25519_verifier",
    "latest_update_time",
    "share_database_path",
]
