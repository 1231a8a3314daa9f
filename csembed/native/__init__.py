"""Hashing and rsync primitives, in C with a pure-Python twin.

Theory of operation: two backends offer the same API --
:mod:`csembed.native.compiled` (the cffi extension ``csembed._native``, built
from ``native/*.c``) and :mod:`csembed.native.pure`. At import this module picks
one and re-exports its names:

* ``CSEMBED_BACKEND=python`` (or ``pure``) forces the pure backend;
* otherwise the C backend is used if its extension imports; if it does not,
  a loud warning goes to :mod:`warnings` and to stderr and the pure backend
  takes over. The fallback is never fatal: csembed still works, only slower.

:data:`BACKEND` says which one is active (``"c"`` or ``"python"``). Tests reach
either backend directly through :func:`get_backend` to cross-check them in one
process.

The primitives: :class:`RollSum` and :class:`RabinKarp` (librsync's two 32-bit
rolling weak sums: ``update`` appends bytes, ``rotate``/``roll`` slide the
window, ``rollout`` shrinks it, ``digest`` reads it), :class:`Blake2b`
(digest length 1..64) and :class:`MD4`, plus one-shot functions of the same
names in lower case. The rsync engine's cores -- :class:`SigGenerator`,
:class:`SumSet`, :class:`DeltaGenerator`, :class:`PatchDecoder` -- are used
through the validating, streaming API of :mod:`csembed.rsync`.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from types import ModuleType
from typing import TYPE_CHECKING

from csembed.native.errors import (
    BadMagicError,
    CorruptError,
    LimitError,
    RsyncError,
    RsyncParamError,
    TruncatedError,
)

_ENV = "CSEMBED_BACKEND"


def _pure() -> ModuleType:
    # Imported only when used: with the C backend a daemon never needs the
    # twin, and its modules cost resident memory a small board cannot spare.
    return importlib.import_module("csembed.native.pure")


def _load_compiled() -> tuple[ModuleType | None, str]:
    try:
        from csembed.native import compiled
    except ImportError as exc:  # extension not built, or built for another Python
        return None, str(exc)
    return compiled, ""


def __getattr__(name: str) -> ModuleType:
    """``csembed.native.pure`` as an attribute, loaded on first use."""
    if name == "pure":
        return _pure()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _choose() -> ModuleType:
    requested = os.environ.get(_ENV, "").strip().lower()
    if requested in ("python", "pure"):
        return _pure()
    if requested not in ("", "c", "native"):
        warnings.warn(f"{_ENV}={requested!r} is not 'c' or 'python'; choosing automatically",
                      RuntimeWarning, stacklevel=3)
    compiled, why = _load_compiled()
    if compiled is not None:
        return compiled
    message = (f"csembed: the C extension csembed._native is unavailable ({why}); "
               "using the much slower pure-Python backend")
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    print(f"WARNING: {message}", file=sys.stderr)
    return _pure()


def get_backend(name: str) -> ModuleType:
    """The backend module called ``name`` (``"c"`` or ``"python"``).

    Raises :class:`ImportError` if the C backend is asked for but not built.
    """
    if name == "python":
        return _pure()
    if name == "c":
        compiled, why = _load_compiled()
        if compiled is None:
            raise ImportError(f"C backend unavailable: {why}")
        return compiled
    raise ValueError(f"unknown backend {name!r}; expected 'c' or 'python'")


def available_backends() -> list[str]:
    """Names of the backends that can be used in this process."""
    return ["c", "python"] if _load_compiled()[0] is not None else ["python"]


_impl = _choose()

#: Name of the backend in use: ``"c"`` or ``"python"``.
BACKEND: str = _impl.NAME

if TYPE_CHECKING:  # the pure twin's modules, named one by one (the package loads lazily)
    from csembed.native.pure.blake2b import Blake2b, blake2b
    from csembed.native.pure.md4 import MD4, md4
    from csembed.native.pure.rsync import DeltaGenerator, PatchDecoder, SigGenerator, SumSet
    from csembed.native.pure.weaksums import RabinKarp, RollSum, rabinkarp, rollsum
else:
    MD4 = _impl.MD4
    DeltaGenerator = _impl.DeltaGenerator
    PatchDecoder = _impl.PatchDecoder
    SigGenerator = _impl.SigGenerator
    SumSet = _impl.SumSet
    Blake2b = _impl.Blake2b
    RabinKarp = _impl.RabinKarp
    RollSum = _impl.RollSum
    blake2b = _impl.blake2b
    md4 = _impl.md4
    rabinkarp = _impl.rabinkarp
    rollsum = _impl.rollsum

__all__ = [
    "BACKEND", "MD4", "BadMagicError", "Blake2b", "CorruptError", "DeltaGenerator", "LimitError",
    "PatchDecoder", "RabinKarp", "RollSum", "RsyncError", "RsyncParamError", "SigGenerator",
    "SumSet", "TruncatedError", "available_backends", "blake2b", "get_backend", "md4",
    "rabinkarp", "rollsum",
]
