"""Security layer: share keys, the ``clearskies:2`` handshake, records, rate limits.

* :mod:`~csembed.security.keys` -- share keys, key IDs, Ed25519 signing keys, peer IDs.
* :mod:`~csembed.security.spake2` -- SPAKE2 over edwards25519 and the key schedule.
* :mod:`~csembed.security.records` -- secretstream records, one stream per direction.
* :mod:`~csembed.security.handshake` -- :class:`SecureSession`, the sans-I/O connection.
* :mod:`~csembed.security.rate_limit` -- back-off for failed authentications.
* :mod:`~csembed.security.key_file` -- private JSON files (mode 0600, atomic).
* :mod:`~csembed.security.sodium` -- the libsodium calls, through PyNaCl's compiled module.

``protocol/handshake.md`` specifies the bytes; this package is its reference.
"""

from csembed.security.errors import (
    AuthenticationFailed,
    HandshakeError,
    KeyFormatError,
    RecordError,
    SecurityError,
    SessionStateError,
)
from csembed.security.handshake import (
    Credential,
    HandshakeComplete,
    PlaintextReceived,
    SecureSession,
    SessionClosed,
    SessionConfig,
    SessionFailed,
)
from csembed.security.keys import (
    ACCESS_LEVELS,
    READ_ONLY,
    READ_WRITE,
    LevelKeys,
    ShareKeys,
    new_peer_id,
)
from csembed.security.rate_limit import BackoffSchedule, GuessBudget, RateLimiter

__all__ = [
    "ACCESS_LEVELS", "READ_ONLY", "READ_WRITE", "AuthenticationFailed", "BackoffSchedule",
    "GuessBudget",
    "Credential", "HandshakeComplete", "HandshakeError", "KeyFormatError", "LevelKeys",
    "PlaintextReceived", "RateLimiter", "RecordError", "SecureSession", "SecurityError",
    "SessionClosed", "SessionConfig", "SessionFailed", "SessionStateError", "ShareKeys",
    "new_peer_id",
]
