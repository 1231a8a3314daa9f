"""Give the heap's free pages back to the kernel (glibc's ``malloc_trim``).

Theory of operation
-------------------
CPython hands its small-object arenas back to the system when they empty, but
everything larger comes from the C library's ``malloc``, which keeps freed
memory for reuse. After the daemon starts (module loading leaves many holes)
and after each burst of work -- a scan, a sync -- that freed memory stays
resident until the next burst: about a megabyte on the ``wifi-piano`` board,
a twentieth of its budget. glibc's ``malloc_trim(0)`` returns every free page
of every arena (``madvise``); its cost grows with the heap, well under a
millisecond for a few megabytes, so the daemon calls :func:`trim` once
started and then at each maintenance tick. Without glibc (musl, macOS) there
is no such call and :func:`trim` does nothing.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

from csembed import libc_calls

__all__ = ["give_back", "trim"]


def _load() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return libc_calls.function("malloc_trim", "int", "size_t")


_malloc_trim = _load()


def trim() -> bool:
    """Release the heap's free pages; ``True`` if any memory went back."""
    return _malloc_trim is not None and bool(_malloc_trim(0))


def give_back() -> bool:
    """Collect garbage in reference cycles, then :func:`trim`."""
    gc.collect()
    return trim()
