"""Dialling a peer's TCP and uTP addresses at once: TCP that works wins, uTP
takes over when TCP hangs, failures start the next way at once."""

from __future__ import annotations

import asyncio
from typing import Any

from csembed.runtime.dial_race import first_connected


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


def attempt(name: str, delay: float, log: list[str], *, fail: bool = False,
            made: list[Conn] | None = None) -> Any:
    async def dial() -> Conn:
        log.append(f"start {name}")
        await asyncio.sleep(delay)
        if fail:
            raise OSError(f"{name} refused")
        conn = Conn(name)
        if made is not None:
            made.append(conn)
        return conn
    return dial


def test_working_tcp_wins_before_utp_even_starts() -> None:
    async def main() -> None:
        log: list[str] = []
        won = await first_connected([(0.0, attempt("tcp", 0.01, log)),
                                     (1.0, attempt("utp", 0.0, log))])
        assert won is not None and won[1].name == "tcp" and log == ["start tcp"]
    asyncio.run(main())


def test_hanging_tcp_loses_to_utp_after_its_head_start() -> None:
    async def main() -> None:
        log: list[str] = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        won = await first_connected([(0.0, attempt("tcp", 30.0, log)),
                                     (0.2, attempt("utp", 0.01, log))])
        assert won is not None and won[0] == 1 and won[1].name == "utp"
        assert 0.2 <= loop.time() - t0 < 5.0
    asyncio.run(main())


def test_failures_start_the_next_at_once_and_all_failing_gives_none() -> None:
    async def main() -> None:
        log: list[str] = []
        errors: list[int] = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        won = await first_connected([(0.0, attempt("a", 0.0, log, fail=True)),
                                     (10.0, attempt("b", 0.0, log, fail=True))],
                                    on_error=lambda i, e: errors.append(i))
        assert won is None and errors == [0, 1] and loop.time() - t0 < 5.0
    asyncio.run(main())


def test_a_late_second_success_is_aborted() -> None:
    async def main() -> None:
        log: list[str] = []
        made: list[Conn] = []
        won = await first_connected([(0.0, attempt("a", 0.05, log, made=made)),
                                     (0.0, attempt("b", 0.05, log, made=made))])
        assert won is not None
        losers = [c for c in made if c is not won[1]]
        assert all(c.aborted for c in losers) and not won[1].aborted
    asyncio.run(main())
