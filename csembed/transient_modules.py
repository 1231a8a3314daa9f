"""Modules a long-running process needs only for a moment: import, use, forget.

Theory of operation
-------------------
A module stays resident for as long as anything refers to it, and
:data:`sys.modules` always does. The daemon uses some modules only while it
starts -- :mod:`tomllib` to read the board profile, :mod:`argparse` to read
its command line -- and would otherwise carry their code, classes and
compiled regular expressions for its whole life (a few hundred kilobytes; the
``wifi-piano`` board budgets 24 MB for everything).

:func:`transient_modules` is a context manager: the named modules (and their
submodules) that get imported inside it are removed from :data:`sys.modules`
when it exits, as is the attribute naming them on a parent package that stays,
and :mod:`re`'s cache of compiled patterns is emptied (module-level
``re.compile`` calls leave their patterns there too). Once the caller drops its
own references -- the module must be imported inside the block, never at the
top of the calling module -- the garbage collector frees them and later
allocations reuse the space. A module that was already loaded before the block
is left alone, so this never unloads what someone else holds. Importing the
module again later works; it is simply loaded afresh.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["transient_modules"]


def _named(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


@contextmanager
def transient_modules(*roots: str) -> Iterator[None]:
    """Forget the modules under ``roots`` that the block imports, when it ends."""
    before = set(sys.modules)
    try:
        yield
    finally:
        added = [name for name in set(sys.modules) - before if _named(name, roots)]
        for name in sorted(added, reverse=True):  # children before their parents
            sys.modules.pop(name, None)
            parent_name, _, child = name.rpartition(".")
            parent = sys.modules.get(parent_name) if parent_name else None
            if parent is not None and getattr(parent, child, None) is not None:
                delattr(parent, child)
        if added:
            re.purge()
