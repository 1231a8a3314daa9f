"""Two peers over real loopback TCP: encrypted sessions, real folders, real databases.

The in-process tests run both peers' :class:`ShareRuntime` on one event loop
and wait on engine state (never on sleeps): ``converged`` waits until both
have scanned with nothing new, hold every version the other wrote, and have
nothing to fetch or send. The kill test runs the receiving peer as a
subprocess (``tools/bench/sync.py peer``) and SIGKILLs it mid-transfer.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sync_support import SHARE, Node, tree

from csembed import native
from csembed.access_code import AccessCode
from csembed.board_profile import load_board
from csembed.protocol.core import CredentialRegistry, Grant, PeerConnection
from csembed.runtime.peer_link import connect_link, core_config, link_handler
from csembed.runtime.rate_limit import RateLimiter
from csembed.runtime.session_stream import SessionStream, serve
from csembed.runtime.share_runtime import ShareRuntime
from csembed.security.keys import READ_ONLY, READ_WRITE

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "tools" / "bench" / "sync.py"
TIMEOUT = 120  # generous: only guards against a hang
MiB = 1 << 20
# The pure-Python rsync twin makes deltas at a few MB/s: under it (tox's second run)
# the files that travel by rsync are smaller; the native run uses the full 200 MiB.
RSYNC_BIG = 200 * MiB if native.BACKEND != "python" else 8 * MiB


def board():
    desktop = load_board("desktop")
    return dataclasses.replace(desktop, storage=dataclasses.replace(
        desktop.storage, free_space_reserve=0))


def big_file(path: Path, size: int, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    block = hashlib.sha256(str(seed).encode()).digest() * 32768  # 1 MiB, cheap to make
    with path.open("wb") as fh:
        for i in range(size // MiB):
            piece = i.to_bytes(8, "big") + block[8:]
            fh.write(piece)
            digest.update(piece)
    return digest.hexdigest()


class Pair:
    """Peer ``a`` serves, peer ``b`` connects; both run a ShareRuntime."""

    def __init__(self, a: Node, b: Node, *, upload: RateLimiter | None = None,
                 **link_options) -> None:
        self.a, self.b = a, b
        self.link_options = link_options  # more PeerLink arguments for a's side
        self.ra = ShareRuntime(a.engine, scan_budget=1.0)
        self.rb = ShareRuntime(b.engine, scan_budget=1.0)
        self.upload = upload
        self.tasks: list[asyncio.Task] = []
        self.server = None
        self.link = None

    async def __aenter__(self) -> Pair:
        self.tasks += [asyncio.create_task(self.ra.run()), asyncio.create_task(self.rb.run())]
        registry = CredentialRegistry()
        registry.add_share(SHARE, self.a.peer_id)
        self.config = core_config(self.a.board)
        self.server = await serve("127.0.0.1", 0, registry,
                                  link_handler(lambda ready: self.ra, upload=self.upload,
                                               **self.link_options),
                                  self.config)
        await self.connect()
        return self

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def connect(self, level: str = READ_WRITE) -> None:
        self.link = await connect_link("127.0.0.1", self.port,
                                       Grant.share_key(SHARE, level, self.b.peer_id),
                                       self.config, resolve=lambda ready: self.rb)
        self.tasks.append(asyncio.create_task(self.link.run()))

    async def __aexit__(self, *exc) -> None:
        self.ra.stop()
        self.rb.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self.server.close()

    async def until(self, predicate) -> None:
        """Wait, on either runtime's changes, until ``predicate()`` holds."""
        while not predicate():
            waits = [asyncio.ensure_future(r.changed()) for r in (self.ra, self.rb)]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()

    def settled(self) -> bool:
        return (quiet(self.a.engine, self.ra) and quiet(self.b.engine, self.rb)
                and self.a.engine.replica.since() == self.b.engine.replica.since()
                and len(self.ra.connections) == 1)

    async def converged(self, timeout: float = TIMEOUT) -> None:
        """Both hold the same versions, are idle, and a fresh scan finds nothing new."""
        async with asyncio.timeout(timeout):
            while True:
                await self.until(self.settled)
                for runtime in (self.ra, self.rb):
                    scans = runtime.engine.stats()["scans"]
                    runtime.request_scan()
                    await runtime.wait_until(lambda e, n=scans: e.stats()["scans"] > n)
                fresh = any(r.engine.last_scan.events or r.engine.last_scan.pending
                            for r in (self.ra, self.rb))
                if not fresh and self.settled():
                    return


def quiet(engine, runtime) -> bool:
    return engine.status()["state"] == "idle" and not any(
        engine.has_outgoing(c) for c in runtime.connections)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 600))


def test_two_peers_over_tcp_converge_on_a_big_tree_then_edits_and_a_conflict(tmp_path):
    a = Node(tmp_path, "a", board=board(), seed=1)
    b = Node(tmp_path, "b", board=board(), seed=2)
    big_sha = big_file(a.root / "media" / "big.bin", RSYNC_BIG, seed=1)
    for i in range(5000):
        a.write(f"small/{i % 40:02d}/f{i:04d}.txt", f"small file {i}\n".encode() * (1 + i % 7))
    a.write("empty.txt", b"")
    (a.root / "empty dir" / "nested empty").mkdir(parents=True)
    a.write("ünïcødé/日本語 ファイル.txt", "unicode ✓".encode())
    a.write("with spaces/a file with spaces.txt", b"spaces")
    a.write("long/" + "n" * 250, b"very long name")
    a.write("deep/" + "/".join(f"level{i}" for i in range(30)) + "/leaf.txt", b"deep")
    a.write("c.txt", b"base")
    os.sync()  # keep the set-up's dirty pages out of the sync's fsyncs

    async def scenario():
        async with Pair(a, b) as pair:
            await pair.converged()
            assert tree(a.root) == tree(b.root)
            assert tree(b.root)["media/big.bin"] == big_sha
            # edits, appends, renames, deletes, a folder rename, and a concurrent edit
            a.write("small/00/f0000.txt", b"edited")
            with (a.root / "media" / "big.bin").open("ab") as fh:
                fh.write(b"appended" * 1000)
            os.rename(a.root / "with spaces", a.root / "renamed folder")
            os.rename(a.root / "small/01/f0001.txt", a.root / "small/01/moved.txt")
            os.unlink(a.root / "small/02/f0002.txt")
            b.write("small/03/f0003.txt", b"edited on b")
            os.unlink(b.root / "empty.txt")
            a.write("c.txt", b"a's concurrent edit")
            b.write("c.txt", b"b's concurrent edit")
            await pair.converged()
            assert tree(a.root) == tree(b.root)
            assert (b.root / "small/00/f0000.txt").read_bytes() == b"edited"
            assert (a.root / "small/03/f0003.txt").read_bytes() == b"edited on b"
            assert (b.root / "renamed folder/a file with spaces.txt").exists()
            assert not (a.root / "empty.txt").exists()
            copies = [p for p in a.root.iterdir() if p.name.startswith("c.CONFLICT.")]
            assert len(copies) == 1
            contents = {(a.root / "c.txt").read_bytes(), copies[0].read_bytes()}
            assert contents == {b"a's concurrent edit", b"b's concurrent edit"}
            assert b.engine.stats()["files_rsync"] >= 1  # the appended 200 MiB file

    run(scenario())


def test_appended_200_mib_file_travels_as_a_small_rsync_delta(tmp_path):
    a = Node(tmp_path, "a", board=board(), seed=1)
    b = Node(tmp_path, "b", board=board(), seed=2)
    big_file(a.root / "rec.bin", RSYNC_BIG, seed=3)
    os.sync()

    async def scenario():
        async with Pair(a, b) as pair:
            await pair.converged()
            before = b.engine.stats()["payload_received"]
            with (a.root / "rec.bin").open("ab") as fh:
                fh.write(os.urandom(MiB))
            await pair.converged()
            received = b.engine.stats()["payload_received"] - before
            assert tree(a.root) == tree(b.root)
            assert b.engine.stats()["files_rsync"] == 1
            assert received < 3 * MiB, received  # the new 1 MiB plus COPY commands
            assert received < (RSYNC_BIG + MiB) // 2

    run(scenario())


def test_a_joining_device_receives_keys_with_an_access_code_then_syncs(tmp_path):
    a = Node(tmp_path, "a", board=board(), seed=1)
    b = Node(tmp_path, "b", board=board(), seed=2, read_only=True)
    a.write("hello.txt", b"from the owner")

    async def scenario():
        ra = ShareRuntime(a.engine, scan_budget=1.0)
        rb = ShareRuntime(b.engine, scan_budget=1.0)
        tasks = [asyncio.create_task(ra.run()), asyncio.create_task(rb.run())]
        registry = CredentialRegistry()
        registry.add_share(SHARE, a.peer_id)
        code = AccessCode.generate()
        registry.codes.issue(code, SHARE, READ_ONLY, a.peer_id,
                             now=asyncio.get_running_loop().time())
        config = core_config(a.board)
        server = await serve("127.0.0.1", 0, registry, link_handler(lambda r: ra), config)
        stored = []

        async def store_keys(event):
            stored.append(event)

        link = await connect_link("127.0.0.1", server.sockets[0].getsockname()[1],
                                  Grant.code_holder(code, b.peer_id), config,
                                  resolve=lambda ready: rb, on_keys=store_keys)
        tasks.append(asyncio.create_task(link.run()))
        try:
            await rb.wait_until(lambda e: (b.root / "hello.txt").exists()
                                and e.status()["state"] == "idle", TIMEOUT)
            assert (b.root / "hello.txt").read_bytes() == b"from the owner"
            assert [e.access_level for e in stored] == [READ_ONLY]
            assert stored[0].share.level(READ_ONLY).has_key
            assert not stored[0].share.level(READ_WRITE).has_key  # only the public half
            assert link.ready.access_level == READ_ONLY
            assert registry.codes.get(code.credentials.access_id) is None  # spent
        finally:
            ra.stop()
            rb.stop()
            for task in tasks:
                task.cancel()
            server.close()

    run(scenario())


def test_killed_receiver_resumes_a_200_mib_download_with_a_range_request(tmp_path):
    src, dst = tmp_path / "a", tmp_path / "b"
    src.mkdir()
    dst.mkdir()
    size = 200 * MiB
    digest = big_file(src / "big.bin", size, seed=5)
    os.sync()

    def peer(*args):
        return subprocess.Popen([sys.executable, str(BENCH), "peer", *args],
                                stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)

    def event(proc, name):
        for line in proc.stdout:
            found = json.loads(line)
            if found["event"] == name:
                return found
        raise AssertionError(f"peer exited before {name}")

    sender = peer("--root", str(src), "--state", str(tmp_path / "a-state"), "--name", "ka",
                  "--listen", "--upload-rate", str(40 * MiB))
    receiver = None
    try:
        event(sender, "scanned")
        port = event(sender, "listening")["port"]
        args = ("--root", str(dst), "--state", str(tmp_path / "b-state"), "--name", "kb",
                "--connect", str(port), "--until-files", "1")
        receiver = peer(*args)
        deadline = time.monotonic() + TIMEOUT
        partial = 0
        while partial < 50 * MiB:  # poll the temp file until the kill lands mid-transfer
            assert time.monotonic() < deadline and receiver.poll() is None
            temps = list(dst.glob(".big.bin.*.!clearsky"))
            partial = temps[0].stat().st_size if temps else 0
            time.sleep(0.02)
        receiver.send_signal(signal.SIGKILL)
        receiver.wait(30)
        temps = list(dst.glob(".big.bin.*.!clearsky"))
        assert len(temps) == 1 and 50 * MiB <= temps[0].stat().st_size < size
        assert not (dst / "big.bin").exists()
        kept = temps[0].stat().st_size
        receiver = peer(*args)
        done = event(receiver, "done")
        receiver.wait(30)
        assert hashlib.sha256((dst / "big.bin").read_bytes()).hexdigest() == digest
        assert not list(dst.glob("*.!clearsky")) and not list(dst.glob(".*.!clearsky"))
        # only the rest was asked for: the first range started where the temp ended
        assert done["stats"]["payload_received"] <= size - kept + 16 * MiB
    finally:
        for proc in (sender, receiver):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("gzip", [0, 1])
def test_transfer_through_gzip_and_throttled_upload(tmp_path, gzip):
    base = board()
    tuned = dataclasses.replace(base, cpu=dataclasses.replace(base.cpu, gzip_level=gzip))
    a = Node(tmp_path, "a", board=tuned, seed=1)
    b = Node(tmp_path, "b", board=tuned, seed=2)
    a.write("text.txt", b"compressible text " * 100_000)
    a.write("random.bin", os.urandom(3 * MiB))

    async def scenario():
        async with Pair(a, b, upload=RateLimiter(20 * MiB)) as pair:
            started = time.monotonic()
            await pair.converged()
            assert tree(a.root) == tree(b.root)
            assert time.monotonic() - started >= 4.8 * MiB / (20 * MiB) * 0.5
            assert ("gzip" in pair.link.ready.extensions) == bool(gzip)

    run(scenario())


@pytest.mark.parametrize("rate", [0, 64 * MiB])
def test_upload_flushes_each_unit_only_while_the_limiter_limits(tmp_path, monkeypatch, rate):
    # 64 KiB chunks: one writer batch (1 MiB) holds many units, so per-unit and
    # per-batch flushing differ by an order of magnitude.
    base = board()
    small = dataclasses.replace(base, memory=dataclasses.replace(base.memory,
                                                                 chunk_size=64 * 1024))
    a = Node(tmp_path, "a", board=small, seed=1)
    b = Node(tmp_path, "b", board=small, seed=2)
    size = 4 * MiB
    a.write("take.bin", os.urandom(size))
    sent: collections.Counter[int] = collections.Counter()
    flushed: collections.Counter[int] = collections.Counter()
    send_encoded, flush = PeerConnection.send_encoded, SessionStream.flush

    def counting_send(machine, unit):
        sent[id(machine)] += 1
        return send_encoded(machine, unit)

    async def counting_flush(stream):
        flushed[id(stream.machine)] += 1
        return await flush(stream)

    monkeypatch.setattr(PeerConnection, "send_encoded", counting_send)
    monkeypatch.setattr(SessionStream, "flush", counting_flush)
    upload = RateLimiter(rate)

    async def scenario():
        async with Pair(a, b, upload=upload) as pair:
            await pair.converged()
            assert tree(a.root) == tree(b.root)
            uploader = next(key for key in sent if key != id(pair.link.stream.machine))
            assert upload.meter.total >= size  # measured even when unlimited
            assert upload.throughput() > 0
            units, flushes = sent[uploader], flushed[uploader]
            assert units >= size // (64 * 1024)
            if rate:
                assert flushes >= units
            else:
                assert flushes * 2 <= units, (flushes, units)

    run(scenario())


def test_reading_a_peer_file_by_ranges_without_storing_it(tmp_path):
    from csembed.directory.selection import PatternSet, Selection
    a = Node(tmp_path, "a", board=board(), seed=1)
    b = Node(tmp_path, "b", board=board(), seed=2,
             selection=Selection(partial=PatternSet(["*.flac"])))
    data = os.urandom(3 * MiB + 123)
    a.write("song.flac", data)

    async def scenario():
        async with Pair(a, b) as pair:
            await pair.converged()
            assert not (b.root / "song.flac").exists()
            stream = b.engine.open_stream("/song.flac")
            for offset, count in ((0, 1000), (2 * MiB + 5, 70_000), (len(data) - 10, 10)):
                got = await pair.rb.read_remote(stream, offset, count, timeout=TIMEOUT)
                assert got == data[offset:offset + count]
            assert stream.cached_bytes <= stream.max_blocks * b.board.memory.chunk_size
            assert tree(b.root) == {}

    run(scenario())


def test_many_small_files_leave_in_coalesced_writes_in_order_and_bounded(tmp_path, monkeypatch):
    # 300 small files: the receiver's requests go out many units per socket
    # write, the sender's writes stay bounded by the writer's max_unit_bytes
    # (one batch), and every file arrives intact (units keep their order).
    base = board()
    small = dataclasses.replace(base, memory=dataclasses.replace(base.memory,
                                                                 chunk_size=64 * 1024))
    a = Node(tmp_path, "a", board=small, seed=1)
    b = Node(tmp_path, "b", board=small, seed=2)
    for i in range(300):
        a.write(f"d{i % 5}/f{i:03d}.bin", os.urandom(4096))
    max_unit = 32 * 1024
    writes: dict[int, list[int]] = collections.defaultdict(list)
    data_to_send = PeerConnection.data_to_send

    def recording(machine):
        data = data_to_send(machine)
        if data:
            writes[id(machine)].append(len(data))
        return data

    monkeypatch.setattr(PeerConnection, "data_to_send", recording)

    async def scenario():
        async with Pair(a, b, max_unit_bytes=max_unit) as pair:
            await pair.converged()
            assert tree(a.root) == tree(b.root)
            receiver = pair.link
            assert receiver.units_out >= 300  # a request per file, at least
            sent = len(writes[id(receiver.stream.machine)])
            assert sent * 4 <= receiver.units_out, (sent, receiver.units_out)
            sender = next(key for key in writes if key != id(receiver.stream.machine))
            assert max(writes[sender]) <= 2 * max_unit + 64 * 1024 + 4096, max(writes[sender])

    run(scenario())
