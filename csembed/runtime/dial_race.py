"""Dial several ways at once and keep the first that connects ("happy eyeballs").

Theory of operation
-------------------
:func:`first_connected` takes attempts, each a start delay and a coroutine
factory, starts each at its delay (or at once when every earlier attempt has
already failed), returns the first result and cancels the rest. The
connection manager lists a peer's TCP addresses first, a quarter second apart,
then its uTP addresses after a head start, so a direct TCP path that works is
preferred while a peer reachable only through a punched UDP hole still
connects within seconds instead of after every TCP timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

__all__ = ["first_connected"]

T = TypeVar("T")


async def first_connected(attempts: Sequence[tuple[float, Callable[[], Awaitable[T]]]],
                          *, on_error: Callable[[int, BaseException], None] | None = None
                          ) -> tuple[int, T] | None:
    """Run the attempts; (index, result) of the first to succeed, ``None`` if all fail.

    Results of attempts that succeed after the winner are closed with their
    ``abort()`` method when they have one.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending: dict[asyncio.Task[T], int] = {}
    failed: set[int] = set()
    nxt = 0
    winner: tuple[int, T] | None = None
    try:
        while winner is None and (nxt < len(attempts) or pending):
            while nxt < len(attempts) and (
                    loop.time() - start >= attempts[nxt][0] or not pending):
                pending[loop.create_task(attempts[nxt][1]())] = nxt  # type: ignore[arg-type]
                nxt += 1
            timeout = None if nxt >= len(attempts) else \
                max(0.0, start + attempts[nxt][0] - loop.time())
            done, _ = await asyncio.wait(pending, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                index = pending.pop(task)
                exc = task.exception()
                if exc is not None:
                    failed.add(index)
                    if on_error is not None:
                        on_error(index, exc)
                elif winner is None:
                    winner = (index, task.result())
                else:
                    _discard(task.result())
        return winner
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                _discard(await task)


def _discard(result: object) -> None:
    abort = getattr(result, "abort", None)
    if callable(abort):
        abort()
