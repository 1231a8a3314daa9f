"""asyncio driver of one share: scans, timers, and waking the connections' writers.

Theory of operation
-------------------
The :class:`~csembed.directory.engine.ShareEngine` is sans-I/O; this is the
one place its clock and its schedule come from. :meth:`ShareRuntime.run` is
one task per share that loops:

1. **scan** when the engine says one is due, in slices of the board's scan
   budget (:class:`~csembed.directory.pacing.ScanBudget`): work for a slice,
   then sleep so that scanning stays at ``cpu.scan_budget`` of wall time --
   the connections keep running in between;
2. **handle the timer** of the engine (retries, expired bans, planning);
3. **sleep** until the engine's next deadline or until something wakes it
   (a rescan request, a change notification, a new connection, or an engine
   call that set an earlier deadline -- e.g. a finished download's landing).

While :attr:`ShareRuntime.paused` (``csembed pause PATH``) the loop only
waits: no scan, no tick. The daemon closes the share's links and makes no
new ones meanwhile, so nothing moves; :meth:`ShareRuntime.set_paused` back
to False scans at once for what changed while paused.

A requested scan (``rescan``, a change notification) runs at full speed, as
does hashing new or changed content (:func:`~csembed.directory.pacing.slice_is_urgent`);
one requested while a pass runs follows it.

Every call into the engine may have queued output for any connection, so
after each one :meth:`notify` sets every attached connection's wake-up
event; the :class:`~csembed.runtime.peer_link.PeerLink` writer tasks wait on
those. :meth:`wait_until` lets callers (the daemon's status commands, tests)
wait for a condition on the engine without polling: it re-checks after every
engine call. The engine's ``now`` is wall-clock time (``time.time()``), as
the scanner needs; scan slices are measured with ``time.monotonic``.

A peer that breaks the engine's bounds (:class:`~csembed.directory.sync_context.PeerBounds`)
is dropped by the engine; after every call the runtime hands the drops to
``on_drop(conn_id, reason)`` (set by whoever owns the links, to close them).
:meth:`may_read` says whether to read more from a connection now, and a
link's reader awaits :meth:`wait_readable` before each read, so a peer that
does not read our replies is not read from either.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from csembed.directory.engine import PeerInfo, ShareEngine
from csembed.directory.pacing import ScanBudget, slice_is_urgent
from csembed.directory.transfer_stream import RemoteStream
from csembed.protocol.wire import Message, PayloadChunk, PayloadEnd
from csembed.runtime.change_notify import ChangeNotifier


class ShareRuntime:
    """Runs one :class:`ShareEngine` on the event loop.

    ``scan_budget`` overrides the board's ``cpu.scan_budget`` (tests pass 1.0
    to scan at full speed); ``wall`` and ``monotonic`` are the clocks;
    ``watch_changes`` starts inotify (:mod:`.change_notify`) while running.
    """

    def __init__(self, engine: ShareEngine, *, scan_budget: float | None = None,
                 slice_seconds: float = 0.05, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 watch_changes: bool = True) -> None:
        self.engine = engine
        self.scan_budget = scan_budget if scan_budget is not None \
            else engine.board.cpu.scan_budget
        self.slice_seconds = slice_seconds
        self.wall = wall
        self.monotonic = monotonic
        self._wakes: dict[Any, asyncio.Event] = {}
        self._kick = asyncio.Event()
        self._sleep_until: float | None = None  #: the deadline the loop sleeps towards
        self._changed = asyncio.Event()
        self._stopping = False
        self.scan_work_seconds = 0.0  #: CPU-side time of the last completed scan pass
        self.scan_wall_seconds = 0.0  #: wall time of the last completed scan pass
        #: called with (conn_id, reason) for each connection the engine dropped
        self.on_drop: Callable[[Any, str], None] | None = None
        self._scan_requested = False
        self._rescan_after = False
        self.watch_changes = watch_changes
        self.notifier: ChangeNotifier | None = None  #: inotify, while running
        self.last_budget: ScanBudget | None = None  #: pacing of the last scan pass
        self.paused = False  #: no scans, no ticks (the daemon keeps the links closed)

    # -- connections --------------------------------------------------------------

    def attach(self, conn_id: Any, info: PeerInfo) -> asyncio.Event:
        """A peer is ready on ``conn_id``; returns the event that wakes its writer."""
        wake = asyncio.Event()
        self._wakes[conn_id] = wake
        self.engine.connect(conn_id, info, self.wall())
        self.notify()
        return wake

    def detach(self, conn_id: Any) -> None:
        """The connection ended."""
        self._wakes.pop(conn_id, None)
        self.engine.disconnect(conn_id)
        self.notify()

    def receive(self, conn_id: Any, event: Message | PayloadChunk | PayloadEnd) -> None:
        """An event from ``conn_id`` for the engine."""
        self.engine.receive(conn_id, event, self.wall())
        self.notify()

    def may_read(self, conn_id: Any) -> bool:
        """Whether to read more from ``conn_id`` now (False while its replies back up)."""
        return self.engine.may_read(conn_id)

    def dropped(self, conn_id: Any) -> str | None:
        """Why the engine dropped ``conn_id`` (close its link), or ``None``."""
        return self.engine.dropped(conn_id)

    async def wait_readable(self, conn_id: Any, poll: float = 0.1) -> str | None:
        """Return once the engine takes more input from ``conn_id`` (a link's reader
        awaits this before each read: throttling); the drop reason if it was dropped.

        Replies drain through the link's writer, which calls the engine
        directly, so besides every engine call made here this re-checks every
        ``poll`` seconds.
        """
        while True:
            reason = self.engine.dropped(conn_id)
            if reason is not None:
                return reason
            if conn_id not in self._wakes or self.engine.may_read(conn_id):
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), poll)

    @property
    def connections(self) -> list[Any]:
        """Attached connection ids."""
        return list(self._wakes)

    # -- waking -------------------------------------------------------------------

    def notify(self) -> None:
        """The engine may have output for anyone, and its state may have changed."""
        for conn_id, reason in self.engine.take_drops():
            if self.on_drop is not None:
                self.on_drop(conn_id, reason)
        for wake in self._wakes.values():
            wake.set()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        # Input may have set an earlier deadline (a landing batch's short wait):
        # wake the loop, which sleeps towards the deadline it saw last.
        deadline = self.engine.get_timer()
        if deadline is not None and (self._sleep_until is None or deadline < self._sleep_until):
            self._kick.set()

    def request_scan(self, settled: list[str] | None = None) -> None:
        """Rescan now at full speed (a daemon command, a change notification).

        A requested scan settles every change it sees at once; with
        ``settled`` (keys a notification saw closed after writing) only those.
        """
        self.engine.local.scanner.settle_next_pass(settled)
        self._scan_requested = True
        if self.engine.scanning:
            self._rescan_after = True  # the pass in progress may have listed too early
        self.engine.request_scan()
        self._kick.set()

    async def changed(self) -> None:
        """Return at the next engine call (any state change, any output queued)."""
        await self._changed.wait()

    async def wait_until(self, predicate: Callable[[ShareEngine], bool],
                         timeout: float | None = None) -> None:
        """Return once ``predicate(engine)`` holds (checked after every engine call)."""
        async with asyncio.timeout(timeout):
            while not predicate(self.engine):
                await self._changed.wait()

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the loop; resuming scans for what changed meanwhile."""
        self.paused = paused
        if not paused:
            self.request_scan()
        self._kick.set()

    # -- the loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Scan, handle the engine's timer and sleep until :meth:`stop`."""
        engine = self.engine
        if self.watch_changes:
            self.notifier = ChangeNotifier.start(engine.local.scanner, self, self.monotonic)
        try:
            await self._loop()
        finally:
            if self.notifier is not None:
                self.notifier.close()
                self.notifier = None

    async def _loop(self) -> None:
        engine = self.engine
        while not self._stopping:
            if self.paused:
                self._kick.clear()
                await self._kick.wait()
                continue
            if engine.scan_due(self.wall()):
                await self._scan()
            engine.handle_timer(self.wall())
            self.notify()
            deadline = engine.get_timer()
            timeout = None if deadline is None else max(0.0, deadline - self.wall())
            self._kick.clear()
            self._sleep_until = deadline
            if timeout is not None and timeout <= 0:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout)

    async def _scan(self) -> None:
        budget = ScanBudget(self.scan_budget, clock=self.monotonic,
                            slice_seconds=self.slice_seconds)
        requested, self._scan_requested = self._scan_requested, False
        started = self.monotonic()
        while True:
            until = budget.start_slice()
            before = self.engine.scan_hashed_bytes
            done = self.engine.scan(self.wall(), until=until, clock=self.monotonic)
            last = self.engine.last_scan
            hashed = ((last.hashed_bytes if done and last is not None else
                       self.engine.scan_hashed_bytes) - before)
            rest = budget.end_slice(full_speed=slice_is_urgent(requested=requested,
                                                               hashed_bytes=hashed))
            self.last_budget = budget
            self.notify()
            if done:
                break
            await asyncio.sleep(rest)
        if self._rescan_after:
            self._rescan_after = False
            self.engine.request_scan()
        self.scan_work_seconds = budget.work_seconds
        self.scan_wall_seconds = self.monotonic() - started

    def stop(self) -> None:
        """End :meth:`run` at its next wake-up."""
        self._stopping = True
        self._kick.set()

    # -- streaming ----------------------------------------------------------------

    async def read_remote(self, stream: RemoteStream, offset: int, count: int,
                          timeout: float | None = 60.0) -> bytes:
        """Read ``count`` bytes at ``offset`` of a peer's file (:meth:`ShareEngine.open_stream`).

        Fewer only at the end of the file. The engine serves at most its
        stream cache per read; this reads on until ``count`` bytes are in.
        """
        updated = asyncio.Event()
        stream.on_update = lambda _stream: updated.set()
        out = bytearray()
        end = min(offset + count, stream.size)
        try:
            async with asyncio.timeout(timeout):
                while offset + len(out) < end:
                    updated.clear()
                    data = self.engine.stream_read(stream, offset + len(out),
                                                   end - offset - len(out))
                    self.notify()
                    if data is None:
                        await updated.wait()
                    elif not data:
                        break
                    else:
                        out += data
            return bytes(out)
        finally:
            stream.on_update = None
