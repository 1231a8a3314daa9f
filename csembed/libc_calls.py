"""The few C library functions csembed calls that Python 3.11's :mod:`os` lacks.

Theory of operation
-------------------
The daemon needs three things from libc that :mod:`os` does not offer:
``malloc_trim`` (:mod:`csembed.runtime.heap_trim`), ``syncfs``
(:mod:`csembed.directory.disk_sync`) and ``inotify_init1`` /
``inotify_add_watch`` (:mod:`csembed.runtime.change_notify`). The
interpreter is linked with libc, so :func:`function` looks the symbol up in
the process itself (``dlopen(NULL)``), never through
``ctypes.util.find_library`` (which imports shutil and tempfile and may run
``ldconfig``).

The binding is made with cffi's backend module, ``_cffi_backend``, which is
loaded anyway (PyNaCl's libsodium binding runs on it): its
``new_function_type`` builds the C signature from primitive types by hand,
without cffi's C-declaration parser (pycparser, ~1.6 MB resident) and without
:mod:`ctypes` (~0.4 MB). Only where that module is missing does this fall back
to ctypes. Either way a missing symbol gives ``None`` and the caller does
without; the errno of the last failed call is :func:`last_errno`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["CType", "function", "last_errno"]

CType = str
"""A C type by name: ``"int"``, ``"size_t"``, ``"uint32_t"`` or ``"char *"``."""

_PRIMITIVES = ("int", "size_t", "uint32_t")

try:
    import _cffi_backend as _backend
except ImportError:  # pragma: no cover - cffi always ships it; ctypes below
    _backend = None

_process: Any = None  # the process' own symbols, opened on first use
_ctypes: Any = None  # the ctypes module, only if the fallback is taken


def _cffi_type(name: CType) -> Any:
    if name == "char *":
        return _backend.new_pointer_type(_backend.new_primitive_type("char"))
    return _backend.new_primitive_type(name)


def _cffi_function(name: str, restype: CType, argtypes: tuple[CType, ...]) -> Any:
    global _process
    if _process is None:
        _process = _backend.load_library(None)
    signature = _backend.new_function_type(tuple(_cffi_type(a) for a in argtypes),
                                           _cffi_type(restype), False)
    return _process.load_function(signature, name)


def _ctypes_function(name: str, restype: CType, argtypes: tuple[CType, ...]) -> Any:
    global _ctypes, _process
    import ctypes  # only without _cffi_backend: ctypes costs ~0.4 MB resident

    _ctypes = ctypes
    types = {"int": ctypes.c_int, "size_t": ctypes.c_size_t, "uint32_t": ctypes.c_uint32,
             "char *": ctypes.c_char_p}
    if _process is None:
        _process = ctypes.CDLL(None, use_errno=True)
    bound = getattr(_process, name)
    bound.argtypes = [types[a] for a in argtypes]
    bound.restype = types[restype]
    return bound


def function(name: str, restype: CType, *argtypes: CType) -> Callable[..., int] | None:
    """libc's ``name`` with this signature, callable from Python, or ``None`` if the
    C library has no such function."""
    for ctype in (restype, *argtypes):
        if ctype not in _PRIMITIVES and ctype != "char *":
            raise ValueError(f"unsupported C type {ctype!r}")
    bind = _cffi_function if _backend is not None else _ctypes_function
    try:
        bound: Callable[..., int] = bind(name, restype, argtypes)
    except (OSError, AttributeError):
        return None
    return bound


def last_errno() -> int:
    """``errno`` as the last call made through :func:`function` left it."""
    if _backend is not None:
        return int(_backend.get_errno())
    return int(_ctypes.get_errno()) if _ctypes is not None else 0  # pragma: no cover
