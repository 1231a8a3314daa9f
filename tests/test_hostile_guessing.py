"""Issue 10 item 4: guessing an access ID from many addresses cannot lock out
the holder of the right code.

The access ID of a code is public (trackers and LAN announcements carry it).
60 addresses (127.0.0.2 ... 127.0.0.61) keep trying wrong passwords for it
against a real daemon while B joins with the right code: B must get the
share's file within a bound, and the daemon's memory must stay bounded.
Before the fix the per-ID back-off held everyone -- B included -- for up to
60 s per attempt, for minutes on end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)
from test_hostile_support import MiB, memory

from csembed.access_code import AccessCode
from csembed.security.handshake import SecureSession

ATTACKERS = [f"127.0.0.{n}" for n in range(2, 62)]


async def _guess(host: str, port: int, source: str, access_id: str) -> str:
    """One wrong-password attempt from ``source``; how it ended."""
    loop = asyncio.get_running_loop()
    session = SecureSession.client(access_id, os.urandom(8), now=loop.time())
    try:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    except OSError:
        return "refused"
    try:
        writer.write(session.data_to_send())
        answer = await asyncio.wait_for(reader.readexactly(64), 15)
        session.receive_data(answer, loop.time())
        while not isinstance(session.next_event(), type(None)) and session.data_to_send():
            pass
        return "answered"
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        return "closed unanswered"
    finally:
        writer.close()


def _attack(host: str, port: int, access_id: str, stop: threading.Event,
            tally: dict[str, int]) -> None:
    async def one_source(source: str) -> None:
        while not stop.is_set():
            outcome = await _guess(host, port, source, access_id)
            tally[outcome] = tally.get(outcome, 0) + 1
            await asyncio.sleep(0.05)  # pacing of the attacker, not synchronisation

    async def main() -> None:
        attack = asyncio.gather(*(one_source(s) for s in ATTACKERS))
        while not stop.is_set():
            await asyncio.sleep(0.1)
        attack.cancel()  # held guesses are abandoned at once
        with contextlib.suppress(asyncio.CancelledError):
            await attack

    asyncio.run(main())


@pytest.mark.once
def test_guessing_from_60_addresses_does_not_lock_out_the_code_holder(procs: Procs) -> None:
    a = procs.daemon("a", board="wifi-piano")
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    (pa / "recital.mid").write_bytes(os.urandom(50_000))
    code = json.loads(a.cli("share", pa, "--json").stdout)["access_code"]
    access_id = AccessCode.parse(code).access_id
    host, port = a.address.rsplit(":", 1)
    stop = threading.Event()
    tally: dict[str, int] = {}
    attacker = threading.Thread(target=_attack, args=(host, int(port), access_id, stop, tally),
                                daemon=True)
    attacker.start()
    try:
        # let the attack use up the ID's guess budget first
        wait_for(lambda: tally.get("answered", 0) >= 64,  # the ID's whole burst
                 "the attack to spend the ID's guess budget")
        b = procs.daemon("b", "--peer", a.address)
        started = time.monotonic()
        b.cli("attach", code, pb, "--json", "--timeout", "60")
        wait_for(lambda: (pb / "recital.mid").is_file(), "B to receive A's file", timeout=60)
        served = time.monotonic() - started
    finally:
        stop.set()
        attacker.join(30)
    print(f"code holder served in {served:.1f} s while 60 addresses guessed: {tally}; "
          f"A's peak RSS {memory(a.proc.pid)['VmHWM'] / MiB:.1f} MiB")
    assert served < 20.0
    assert memory(a.proc.pid)["VmHWM"] < 64_000_000
