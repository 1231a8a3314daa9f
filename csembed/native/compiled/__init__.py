"""The C backend: thin typed wrappers over the cffi extension ``csembed._native``.

Importing this package raises :class:`ImportError` when the extension was not
built; :mod:`csembed.native` catches that and falls back to the pure backend.
"""

from csembed.native.compiled.hashes import (
    MD4,
    Blake2b,
    RabinKarp,
    RollSum,
    blake2b,
    md4,
    rabinkarp,
    rollsum,
)
from csembed.native.compiled.rsync import DeltaGenerator, PatchDecoder, SigGenerator, SumSet

#: Name reported by :data:`csembed.native.BACKEND` when this backend is in use.
NAME = "c"

__all__ = ["NAME", "MD4", "Blake2b", "DeltaGenerator", "PatchDecoder", "RabinKarp", "RollSum",
           "SigGenerator", "SumSet", "blake2b", "md4", "rabinkarp", "rollsum"]
