"""The sync engine under pressure: hostile peers, stuck states, full disks (issue 10).

Same set-up as ``test_sync_engine.py``: real folders and replicas joined in
memory through the real wire codec. Each test names the item it covers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import random
import time
from pathlib import Path

import pytest
from test_directory_support import tmpfs
from test_sync_engine import RawPeer
from test_sync_support import Node, Wire, peer_id, settle, small_board, tree

from csembed.directory.filestore import StoreLimits
from csembed.directory.planner import HELD_BACK_RETRY
from csembed.directory.selection import PatternSet, Selection
from csembed.directory.transfer_fetch import PeerInfo
from csembed.directory.transfer_stream import StreamError
from csembed.protocol.wire import Decoder, encode_message
from csembed.runtime.share_runtime import ShareRuntime


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pair(tmp_path: Path, **kwargs) -> tuple[Node, Node, Wire]:
    a = Node(tmp_path, "a", seed=1, **kwargs.pop("a", {}))
    b = Node(tmp_path, "b", seed=2, **kwargs.pop("b", {}))
    return a, b, Wire(a, b)


def quota_board(quota: int):
    board = small_board()
    return dataclasses.replace(board, storage=dataclasses.replace(board.storage, quota=quota))


def held(node: Node) -> list[str]:
    return [entry["key"] for entry in node.engine.status()["held_back"]]


def all_content_held(node: Node) -> bool:
    """Every live file record of the node's replica has its content on its disk."""
    on_disk = set(tree(node.root).values())
    return all(r.value.get("sha256") in on_disk for r in node.engine.replica.records()
               if r.value.get("sha256") and r.value.get("size"))


# -- item 7: a conflict copy is never announced before its content is held ----------------


def test_an_edit_made_while_a_newer_version_is_in_flight_never_promises_missing_bytes(
        tmp_path):
    a, b, wire = pair(tmp_path)
    a.write("f.txt", b"v1")
    settle([a, b], [wire])
    a.write("f.txt", b"v2 from a, in flight")
    a.scan()
    wire.step()  # b has the v2 record and asks for its bytes
    assert b.engine.replica.get("/f.txt").value["sha256"] == sha(b"v2 from a, in flight")
    assert b.engine.status()["files_to_sync"] == 1
    wire.disconnect()
    b.write("f.txt", b"edited on b before v2 arrived")
    b.scan()
    a.write("f.txt", b"v3 from a: v2 is gone")
    a.scan()
    wire.connect()
    settle([a, b], [wire])
    assert tree(a.root) == tree(b.root)
    for node in (a, b):
        status = node.engine.status()
        assert status["files_to_sync"] == 0 and status["state"] == "idle", status
        assert status["complete"] and all_content_held(node)
    contents = {p.read_bytes() for p in a.root.iterdir()}
    assert b"edited on b before v2 arrived" in contents and b"v3 from a: v2 is gone" in contents


def test_an_edit_made_while_the_newer_version_arrives_keeps_both(tmp_path):
    a, b, wire = pair(tmp_path)
    a.write("f.txt", b"v1")
    settle([a, b], [wire])
    a.write("f.txt", b"v2 from a")
    a.scan()
    wire.step()
    b.write("f.txt", b"edited on b meanwhile")
    b.scan()  # the edit waits: v2 is on its way
    assert not any(r.value.get("conflict_source") for r in b.engine.replica.records())
    settle([a, b], [wire])
    assert tree(a.root) == tree(b.root)
    contents = sorted(p.read_bytes() for p in a.root.iterdir())
    assert contents == [b"edited on b meanwhile", b"v2 from a"]
    for node in (a, b):
        assert node.engine.status()["complete"] and all_content_held(node)
    copies = [r for r in b.engine.replica.records() if r.value.get("conflict_source")]
    assert len(copies) == 1 and copies[0].value["sha256"] == sha(b"v2 from a")


# -- item 8: a kept conflict copy is announced to the peer it came from ------------------


def test_a_kept_conflict_copy_is_announced_to_the_peer_it_came_from(tmp_path):
    a, b, wire = pair(tmp_path)
    a.write("f.txt", b"v1")
    settle([a, b], [wire])
    a.write("f.txt", b"v2 from a")
    a.scan()
    b.write("f.txt", b"local edit on b, not scanned yet")
    original = a.engine.receive

    def receive(conn, event, now):
        if any(".CONFLICT." in p.name for p in b.root.iterdir()):
            # b kept v2 aside; a's own copy of v2 is overwritten before a hears of it
            a.write("f.txt", b"v3 on a, not scanned: a no longer holds v2")
        original(conn, event, now)
    a.engine.receive = receive  # type: ignore[method-assign]
    settle([a, b], [wire], scan=False)
    copies = [p for p in b.root.iterdir() if ".CONFLICT." in p.name]
    assert [p.read_bytes() for p in copies] == [b"v2 from a"]
    assert a.engine.status()["waiting_for_peers"] == 0
    assert (a.root / copies[0].name).read_bytes() == b"v2 from a"  # fetched back from b


# -- item 9: downloads held back by the limits are retried, and counted ---------------------


def test_a_download_held_back_by_the_quota_is_retried_after_a_delete(tmp_path):
    a, b, wire = pair(tmp_path, b={"board": quota_board(30_000)})
    a.write("first.bin", b"1" * 20_000)
    settle([a, b], [wire])
    a.write("second.bin", b"2" * 20_000)
    settle([a, b], [wire])
    assert not (b.root / "second.bin").exists()
    status = b.engine.status()
    assert held(b) == ["/second.bin"] and status["held_back"][0]["limit"] == "quota"
    assert status["state"] != "idle" and not status["complete"]
    os.unlink(b.root / "first.bin")  # space frees on b
    settle([a, b], [wire])
    assert (b.root / "second.bin").read_bytes() == b"2" * 20_000
    status = b.engine.status()
    assert status["held_back"] == [] and status["state"] == "idle" and status["complete"]


def test_a_download_held_back_is_retried_on_a_timer_when_space_frees_elsewhere(tmp_path):
    a, b, wire = pair(tmp_path, b={"board": quota_board(10_000)})
    a.write("big.bin", b"B" * 20_000)
    settle([a, b], [wire])
    assert held(b) == ["/big.bin"]
    deadline = b.engine.get_timer()
    assert deadline is not None and deadline < time.time() + 3600
    b.local.store.limits = StoreLimits(quota=100_000)  # e.g. another share was emptied
    b.engine.handle_timer(deadline + 1)
    settle([a, b], [wire])
    assert (b.root / "big.bin").exists() and held(b) == []


def test_a_download_refused_for_lack_of_disk_space_lands_once_space_frees(tmp_path):
    with tmpfs(tmp_path / "b", size="256k"):
        a = Node(tmp_path, "a", seed=1)
        b = Node(tmp_path, "b", seed=2, selection=Selection(ignore=PatternSet(["filler*"])))
        wire = Wire(a, b)
        filler = b.root / "filler.bin"  # on the same filesystem, not part of the share
        filler.write_bytes(b"\0" * 150_000)
        data = os.urandom(150_000)
        a.write("song.bin", data)
        settle([a, b], [wire])
        assert not (b.root / "song.bin").exists()
        [entry] = b.engine.status()["held_back"]
        assert entry["key"] == "/song.bin"
        assert entry["limit"] in ("free_space_reserve", "disk_full")
        assert not b.engine.status()["complete"]
        filler.unlink()  # space frees outside the share: only the timer can notice
        b.engine.handle_timer(time.time() + HELD_BACK_RETRY + 1)
        settle([a, b], [wire])
        assert (b.root / "song.bin").read_bytes() == data
        assert b.engine.status()["complete"]


# -- item 11: concurrent downloads cannot overrun the quota together ------------------------


def test_concurrent_downloads_stay_within_the_quota(tmp_path):
    a, b, wire = pair(tmp_path, b={"board": quota_board(30_000)})
    a.write("one.bin", b"1" * 20_000)
    a.write("two.bin", b"2" * 20_000)
    settle([a, b], [wire])
    landed = [p.name for p in b.root.iterdir() if p.suffix == ".bin"]
    assert len(landed) == 1
    assert sum(p.stat().st_size for p in b.root.iterdir() if p.is_file()) <= 30_000
    assert len(held(b)) == 1 and b.engine.status()["held_back"][0]["limit"] == "quota"


# -- item 2: every per-peer structure and queue is bounded ----------------------------------


def bounded_node(tmp_path: Path) -> Node:
    """A node whose board allows small messages (so its per-peer bounds are small)."""
    return Node(tmp_path, "b", seed=2, board=small_board(max_message=256 * 1024))


def test_a_flood_of_present_messages_is_bounded(tmp_path):
    b = bounded_node(tmp_path)
    rogue = RawPeer(b)
    for i in range(20_000):
        rogue.send({"type": "directory.present", "sha256": sha(b"%d" % i)})
    [peer] = b.engine.peers()
    assert peer["claims"] <= b.engine.bounds.claims < 20_000
    asks = [m for m in rogue.inbox if m.type == "directory.get_presence"]
    rogue.drain()
    asks = [m for m in rogue.inbox if m.type == "directory.get_presence"]
    assert 1 <= len(asks) <= 2  # one at connect, one when the claims overflowed


def test_a_flood_of_not_present_messages_is_bounded(tmp_path):
    b = bounded_node(tmp_path)
    rogue = RawPeer(b)
    for i in range(20_000):
        rogue.send({"type": "directory.not_present", "sha256": sha(b"%d" % i)})
    [peer] = b.engine.peers()
    assert peer["refusals"] <= b.engine.bounds.claims


def test_repeated_presence_requests_queue_one_filter(tmp_path):
    b = Node(tmp_path, "b", seed=2)
    b.write("f.bin", b"content")
    b.scan()
    rogue = RawPeer(b)
    rogue.drain()
    rogue.inbox.clear()
    for _ in range(200):
        rogue.send({"type": "directory.get_presence"})
    rogue.drain()
    filters = [m for m in rogue.inbox if m.type == "directory.bloom_filter"]
    assert len(filters) == 1


def test_a_peer_that_never_reads_its_replies_is_throttled_then_dropped(tmp_path, caplog):
    b = bounded_node(tmp_path)
    rogue = RawPeer(b)
    rogue.drain()
    sent = 0
    while b.engine.dropped("rogue") is None and sent < 50_000:
        rogue.send({"type": "directory.get", "sha256": sha(b"%d" % sent)})
        sent += 1
        if sent == 10:
            assert b.engine.may_read("rogue")
    reason = b.engine.dropped("rogue")
    assert reason is not None and "queued" in reason and sent < 50_000
    assert not b.engine.may_read("rogue") and not b.engine.has_outgoing("rogue")
    assert any("dropping" in r.getMessage() for r in caplog.records)
    assert b.engine.take_drops() == [("rogue", reason)]


# -- item 13: streamed reads of any size, bounded, verified --------------------------------


def piano_pair(tmp_path: Path) -> tuple[Node, Node, Wire]:
    board = small_board(chunk_size=4096)
    return pair(tmp_path, a={"board": board},
                b={"board": board, "selection": Selection(partial=PatternSet(["*.bin"]))})


def test_a_streamed_read_larger_than_the_cache_is_served(tmp_path):
    a, b, wire = piano_pair(tmp_path)
    data = os.urandom(100_000)
    a.write("song.bin", data)
    settle([a, b], [wire])
    stream = b.engine.open_stream("/song.bin")
    got = bytearray()
    while len(got) < len(data):
        piece = b.engine.stream_read(stream, len(got), 1 << 20)  # far more than 4 blocks
        while piece is None:
            wire.step()
            piece = b.engine.stream_read(stream, len(got), 1 << 20)
        assert 0 < len(piece) <= stream.max_blocks * 4096
        assert stream.cached_bytes <= stream.max_blocks * 4096
        got += piece
    assert bytes(got) == data


def test_runtime_reads_of_any_size_are_split_over_the_cache(tmp_path):
    board = small_board(chunk_size=4096)
    node = Node(tmp_path, "a", board=board)
    data = os.urandom(50_000)
    node.write("song.bin", data)
    node.scan()

    async def read() -> bytes:
        runtime = ShareRuntime(node.engine)
        stream = node.engine.open_stream("/song.bin")
        return await runtime.read_remote(stream, 1000, 1 << 20, timeout=30)
    assert asyncio.run(read()) == data[1000:]


def test_a_streamed_file_that_does_not_match_its_sha256_fails_loudly(tmp_path):
    b = Node(tmp_path, "b", seed=2, board=small_board(chunk_size=4096),
             selection=Selection(partial=PatternSet(["*.bin"])))
    rogue = RawPeer(b)
    content = os.urandom(10_000)
    rogue.update("/s.bin", {"size": len(content), "sha256": sha(content)})
    assert rogue.requests() == []  # a partial copy: only streamed
    stream = b.engine.open_stream("/s.bin")
    served = bytearray(content)
    served[5000] ^= 1
    offset = 0
    with pytest.raises(StreamError, match="sha256"):
        while offset < len(content):
            piece = b.engine.stream_read(stream, offset, 4096)
            if piece is None:
                for get in rogue.requests():
                    start, count = get.body["range"]
                    rogue.send({"type": "directory.data", "sha256": sha(content),
                                "range": [start, count]},
                               payload=[bytes(served[start:start + count])])
                continue
            offset += len(piece)


def test_the_runtime_holds_a_reader_back_until_the_replies_drain(tmp_path):
    b = bounded_node(tmp_path)

    async def scenario() -> None:
        runtime = ShareRuntime(b.engine)
        runtime.attach("rogue", PeerInfo(peer_id("rogue"), False))
        dropped: list[tuple[str, str]] = []
        runtime.on_drop = lambda conn, reason: dropped.append((conn, reason))
        while b.engine.has_outgoing("rogue"):
            b.engine.outgoing("rogue")
        sent = 0
        while b.engine.may_read("rogue"):
            body = {"type": "directory.get", "sha256": sha(b"%d" % sent)}
            for event in decode(encode_message(body)):
                runtime.receive("rogue", event)
            sent += 1
        waiting = asyncio.create_task(runtime.wait_readable("rogue", poll=0.01))
        await asyncio.sleep(0)
        assert not waiting.done()  # throttled: the link would not read now
        while b.engine.has_outgoing("rogue"):
            b.engine.outgoing("rogue")
        assert await asyncio.wait_for(waiting, 30) is None  # drained: read again
        while b.engine.dropped("rogue") is None:
            body = {"type": "directory.get", "sha256": sha(b"%d" % sent)}
            for event in decode(encode_message(body)):
                runtime.receive("rogue", event)
            sent += 1
        assert [conn for conn, _ in dropped] == ["rogue"]
        assert await runtime.wait_readable("rogue") == dropped[0][1]
    asyncio.run(scenario())


def decode(data: bytes) -> list:
    decoder = Decoder()
    decoder.receive_data(data)
    return list(decoder.events())


# -- random edits on both sides while transfers are in flight -------------------------------


def _random_session(tmp_path: Path, seed: int) -> tuple[Node, Node]:
    rng = random.Random(seed)
    a, b, wire = pair(tmp_path)
    for i in range(3):
        a.write(f"f{i}.txt", b"base %d" % i)
    settle([a, b], [wire])
    for _ in range(40):
        node = rng.choice([a, b])
        name = f"f{rng.randrange(4)}.txt"
        if rng.random() < 0.6:
            node.write(name, rng.randbytes(rng.choice([10, 5000, 50_000])))
        elif (node.root / name).exists() and rng.random() < 0.25:
            (node.root / name).unlink()
        if rng.random() < 0.5:
            node.scan()
        roll = rng.random()
        if roll < 0.1 and wire.open:
            wire.disconnect()
        elif roll < 0.3 and not wire.open:
            wire.connect()
        if wire.open:
            for _ in range(rng.randrange(4)):
                wire.step(limit=rng.choice([200, 4096, 1 << 20]))
    if not wire.open:
        wire.connect()
    settle([a, b], [wire])
    return a, b


@pytest.mark.parametrize("seed", range(20))
def test_random_edits_during_transfers_converge_and_say_so(tmp_path, seed):
    a, b = _random_session(tmp_path, seed)
    files = {k: v for k, v in tree(a.root).items() if v != "TEMP"}  # partials may stay
    assert files == {k: v for k, v in tree(b.root).items() if v != "TEMP"}
    for node in (a, b):
        status = node.engine.status()
        assert status["complete"] and status["state"] == "idle", status
        assert all_content_held(node)
