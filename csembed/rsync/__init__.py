"""librsync-compatible signatures, deltas and patches, streamed.

Theory of operation. To update an old copy of a file (the *basis*) to a new
version without sending it whole:

1. the holder of the basis sends its **signature**: per block of
   ``block_len`` bytes a 32-bit rolling weak sum and a truncated strong hash
   (:class:`SignatureWriter`);
2. the holder of the new file loads it (:class:`Signature`, bounded and
   validated) and writes a **delta**: it slides a block-sized window over the
   new file, and wherever the window's sums match a basis block it emits
   ``COPY(offset, length)``, elsewhere ``LITERAL`` bytes (:class:`DeltaWriter`);
3. the basis holder **patches**: replays the commands against its basis
   (:class:`Patcher`), into a temp file renamed into place when complete.

Formats and defaults are librsync 2.3's, byte for byte: our signatures equal
``rdiff signature``'s, ``rdiff patch`` accepts our deltas and we apply
``rdiff delta``'s (see ``protocol/rsync.md``). Every stage takes input in
chunks and returns output in chunks; memory is the signature plus about one
block. The hot loops run in C (``native/``) with a pure-Python twin chosen by
:mod:`csembed.native`; every class takes ``backend=`` to pick one explicitly.
All failures are :class:`RsyncError` subclasses.
"""

from csembed.native.errors import (
    BadMagicError,
    CorruptError,
    LimitError,
    RsyncError,
    RsyncParamError,
    TruncatedError,
)
from csembed.native.rsync_format import (
    BLAKE2_SIG_MAGIC,
    DELTA_MAGIC,
    MD4_SIG_MAGIC,
    RK_BLAKE2_SIG_MAGIC,
    RK_MD4_SIG_MAGIC,
)
from csembed.rsync.delta import DeltaStats, DeltaWriter
from csembed.rsync.files import (
    atomic_output,
    delta_file,
    load_signature,
    patch_file,
    signature_file,
)
from csembed.rsync.params import (
    DEFAULT_MAGIC,
    SignatureParams,
    default_block_len,
    min_strong_len,
    signature_magic,
)
from csembed.rsync.patch import Patcher
from csembed.rsync.signature import DEFAULT_MAX_SIGNATURE, Signature, SignatureWriter

__all__ = [
    "BLAKE2_SIG_MAGIC", "DEFAULT_MAGIC", "DEFAULT_MAX_SIGNATURE", "DELTA_MAGIC", "MD4_SIG_MAGIC",
    "RK_BLAKE2_SIG_MAGIC", "RK_MD4_SIG_MAGIC", "BadMagicError", "CorruptError", "DeltaStats",
    "DeltaWriter", "LimitError", "Patcher", "RsyncError", "RsyncParamError", "Signature",
    "SignatureParams", "SignatureWriter", "TruncatedError", "atomic_output", "default_block_len",
    "delta_file", "load_signature", "min_strong_len", "patch_file", "signature_file",
    "signature_magic",
]
