"""The pure-Python backend: same API as :mod:`csembed.native.compiled`, no compiler needed.

It is the fallback when the C extension is missing and the reference the C
code is cross-checked against in the tests. It is exact but slow.
"""

from csembed.native.pure.blake2b import Blake2b, blake2b
from csembed.native.pure.md4 import MD4, md4
from csembed.native.pure.rsync import DeltaGenerator, PatchDecoder, SigGenerator, SumSet
from csembed.native.pure.weaksums import RabinKarp, RollSum, rabinkarp, rollsum

#: Name reported by :data:`csembed.native.BACKEND` when this backend is in use.
NAME = "python"

__all__ = ["NAME", "MD4", "Blake2b", "DeltaGenerator", "PatchDecoder", "RabinKarp", "RollSum",
           "SigGenerator", "SumSet", "blake2b", "md4", "rabinkarp", "rollsum"]
