"""The ``NEED_DATA`` sentinel shared by every sans-I/O machine.

A pull-style machine (``next_event()``) returns :data:`NEED_DATA` when it
cannot go on without more input (or, for timed machines, more time). The wire
decoder, the secure session, the tracker and control codecs and the web
request parser all return the same object, so an adapter can drain any of them
with one loop: ``while (event := machine.next_event()) is not NEED_DATA``.

It lives in this leaf module, below every layer, so that ``security`` and
``protocol`` can both use it without importing each other.
"""

from __future__ import annotations

from typing import Final

__all__ = ["NEED_DATA", "NeedData"]


class NeedData:
    """Type of the :data:`NEED_DATA` singleton, for annotations (``Event | NeedData``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()
"""Returned by ``next_event()`` when the machine cannot go on without more bytes."""
