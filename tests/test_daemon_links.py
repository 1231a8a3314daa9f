"""The connection manager's rule for simultaneous dials, without sockets.

When two daemons dial each other at once, both connections reach ``Ready``
on both sides. Each side must keep the same one -- the connection initiated
by the lower peer ID -- whatever order the two arrive in, and must refuse a
second link in the same direction. The manager's ``_resolve`` is called
directly with fake links (only ``stream.abort`` is used).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from csembed.discovery.backoff import Backoff
from csembed.protocol.core import CoreConfig, Grant, Ready
from csembed.protocol.core_access import CredentialRegistry
from csembed.runtime import connection_manager
from csembed.runtime.connection_manager import ConnectionManager, LinkRecord, Target
from csembed.runtime.rate_limit import DaemonRateLimits
from csembed.security.keys import READ_WRITE, ShareKeys

KEYS = ShareKeys.generate(random.Random(7).randbytes)
SHARE = KEYS.level("read_only").key_id_hex or ""
LOW, HIGH = "1" * 32, "e" * 32


class _Stream:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class _Link:
    def __init__(self) -> None:
        self.stream = _Stream()
        self.bytes_in = 0


class _Hooks:
    runtime = object()

    def runtime_for(self, share_id: str) -> Any:
        return self.runtime if share_id == SHARE else None

    def link_ready(self, ready: Ready) -> None:
        pass


def _manager(max_connections: int = 8) -> ConnectionManager:
    return ConnectionManager(_Hooks(), CredentialRegistry(), CoreConfig(),  # type: ignore[arg-type]
                             limits=DaemonRateLimits.from_rates(0, 0),
                             max_connections=max_connections)


def _ready(us: str, them: str) -> Ready:
    grant = Grant.share_key(KEYS, READ_WRITE, us, tag=("share", SHARE))
    return Ready(1, (), them, None, None, READ_WRITE, KEYS, grant)


def _record(outgoing: bool) -> LinkRecord:
    return LinkRecord(_Link(), outgoing, "outgoing" if outgoing else "incoming")  # type: ignore[arg-type]


@pytest.mark.parametrize("us, them", [(LOW, HIGH), (HIGH, LOW)])
@pytest.mark.parametrize("first_outgoing", [True, False])
def test_both_sides_keep_the_link_initiated_by_the_lower_peer_id(
        us: str, them: str, first_outgoing: bool) -> None:
    manager = _manager()
    first, second = _record(first_outgoing), _record(not first_outgoing)
    assert manager._resolve(first, _ready(us, them)) is _Hooks.runtime
    kept_second = manager._resolve(second, _ready(us, them)) is not None
    we_are_lower = us < them
    keeper = first if first.outgoing == we_are_lower else second
    assert (keeper is second) == kept_second
    assert first.link.stream.aborted == (keeper is second)  # the loser is closed
    assert manager.links_of(SHARE) == [keeper]


def test_a_second_link_in_the_same_direction_is_refused() -> None:
    manager = _manager()
    first, second = _record(True), _record(True)
    assert manager._resolve(first, _ready(LOW, HIGH)) is not None
    assert manager._resolve(second, _ready(LOW, HIGH)) is None
    assert not first.link.stream.aborted
    assert manager.links_of(SHARE) == [first]


def test_board_connection_limit_unknown_shares_and_pause() -> None:
    manager = _manager(max_connections=2)
    peers = [f"{i:032x}" for i in range(2, 6)]
    results = [manager._resolve(_record(False), _ready(LOW, p)) for p in peers]
    assert [r is not None for r in results] == [True, True, False, False]
    other = Grant.share_key(KEYS, READ_WRITE, LOW, tag=("share", "f" * 64))
    stray = Ready(1, (), HIGH, None, None, READ_WRITE, KEYS, other)
    assert manager._resolve(_record(False), stray) is None
    manager.paused = True
    assert manager._resolve(_record(True), _ready(LOW, "9" * 32)) is None
    assert len(manager.links_of(SHARE)) == 2


class _RecordingBackoff(Backoff):
    """Tiny real delays; remembers the failure count at every wait."""

    seen: list[int] = []

    def next_delay(self, u: float) -> float:
        type(self).seen.append(self.failures)
        super().next_delay(u)
        return 0.001


@pytest.mark.parametrize("messages", [0, 3])
def test_back_off_resets_after_a_short_link_that_made_progress(
        monkeypatch: pytest.MonkeyPatch, messages: int) -> None:
    """Issue 10 item 10: a link that resets every few seconds but exchanged messages
    is retried at the initial delay; one that did nothing keeps backing off."""
    _RecordingBackoff.seen = []
    monkeypatch.setattr(connection_manager, "Backoff", _RecordingBackoff)

    async def scenario() -> None:
        manager = _manager()
        manager.hooks.grant_for = lambda target: _ready(LOW, HIGH).grant  # type: ignore[attr-defined]
        dials = 0

        async def dial_once(target: Target, grant: Grant) -> LinkRecord:
            nonlocal dials
            dials += 1
            record = _record(True)
            record.link.messages_in = messages  # type: ignore[attr-defined]
            record.share_id, record.ready_at = SHARE, time.time() - 2.0  # a 2 s link
            if dials == 6:
                manager.set_targets([])
            return record

        manager._dial_once = dial_once  # type: ignore[method-assign]
        manager.set_targets([Target("share", SHARE, HIGH, (("127.0.0.1", 9),), READ_WRITE)])
        async with asyncio.timeout(20):
            while dials < 6 or any(not t.done() for t in manager._dialers.values()):
                await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert len(_RecordingBackoff.seen) >= 5
    if messages:
        assert set(_RecordingBackoff.seen) == {0}
    else:
        assert _RecordingBackoff.seen[:5] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("board", ["desktop", "wifi-piano"])
def test_received_data_moves_up_in_pieces_of_the_boards_io_buffer(board: str) -> None:
    from csembed.board_profile import load_board
    from csembed.runtime.peer_link import DELIVERY_PIECE, core_config

    profile = load_board(board)
    config = core_config(profile)
    piece = min(profile.memory.io_buffer, DELIVERY_PIECE)
    assert piece > 64 * 1024 if board == "desktop" else piece == 64 * 1024
    assert config.limits.max_delivery == config.session.max_batch == piece
