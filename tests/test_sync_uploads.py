"""The sending side: uploads listed per file and peer, and the smallest payload first.

Engine pairs joined in memory (test_sync_support) with small chunks, so a
file spans many pieces and each ``step`` moves a bounded number of bytes."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

from test_sync_support import Node, Wire, settle, small_board

from csembed.cli_commands.status_text import render_share, transfer_line
from csembed.directory import sync_messages as msg
from csembed.directory.transfer_fetch import PickQueue
from csembed.directory.transfer_serve import (
    LOOK_AHEAD,
    MAX_PASSED_OVER,
    OutgoingQueue,
    payload_units,
)
from csembed.directory.uploads import HOLD, MAX_UPLOADS, Uploads
from csembed.protocol.wire import Decoder, Message
from csembed.runtime.share_runtime import ShareRuntime

SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def payload(sha: str, size: int) -> object:
    return payload_units(msg.encode(msg.DataHeader(sha, (0, size))), [b"x" * size])


def order(queue: OutgoingQueue, pulled: list[bytes] | None = None) -> list[str]:
    decoder = Decoder()
    decoder.receive_data(b"".join(pulled or []))
    while queue:
        decoder.receive_data(b"".join(queue.pull(1 << 20)))
    return [e.body["sha256"][0] for e in decoder.events() if isinstance(e, Message)]


def test_the_smallest_waiting_payload_goes_next_after_the_one_in_progress():
    queue = OutgoingQueue()
    queue.push_stream(payload(SHA_A, 4000), size=4000, content=SHA_A)
    queue.push_stream(payload(SHA_A, 4000), size=4000, content=SHA_A)
    pulled = queue.pull(1)  # the first piece of A is under way
    queue.push_stream(payload(SHA_B, 10), size=10, content=SHA_B)
    assert order(queue, pulled) == ["a", "b", "a"]


def test_payloads_of_one_content_keep_their_order():
    queue = OutgoingQueue()
    queue.push_stream(payload(SHA_A, 4000), size=4000, content=SHA_A)
    queue.push_stream(payload(SHA_A, 10), size=10, content=SHA_A)  # its last, short piece
    queue.push_stream(payload(SHA_B, 50), size=50, content=SHA_B)
    decoder = Decoder()
    while queue:
        decoder.receive_data(b"".join(queue.pull(1 << 20)))
    sizes = [(e.body["sha256"][0], e.body["range"][1]) for e in decoder.events()
             if isinstance(e, Message)]
    assert sizes == [("b", 50), ("a", 4000), ("a", 10)]


def test_a_big_payload_is_passed_over_a_bounded_number_of_times():
    queue = OutgoingQueue()
    queue.push_stream(payload(SHA_A, 4000), size=4000, content=SHA_A)
    sent = []
    for i in range(3 * MAX_PASSED_OVER):
        queue.push_stream(payload(SHA_C, 10), size=10, content=f"{i:064x}")
        sent += order_one(queue)
    assert "a" in sent
    assert sent.index("a") == MAX_PASSED_OVER


def order_one(queue: OutgoingQueue) -> list[str]:
    """Pull exactly one whole payload."""
    decoder = Decoder()
    units = queue.pull(1)
    decoder.receive_data(b"".join(units))
    while not any(u == b"0\n" for u in units):
        units = queue.pull(1)
        decoder.receive_data(b"".join(units))
    return [e.body["sha256"][0] for e in decoder.events() if isinstance(e, Message)]


def test_uploads_are_listed_per_file_and_peer_while_sent(tmp_path: Path) -> None:
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    data = os.urandom(300_000)
    a.write("take.wav", data)
    a.scan()
    wire = Wire(a, b, max_bytes=8192)
    seen = []
    for _ in range(10_000):
        if not wire.step():
            if (b.root / "take.wav").exists():
                break
            b.engine.handle_timer(time.time())
        seen.extend(a.engine.uploads(time.time()))
    assert (b.root / "take.wav").read_bytes() == data
    assert seen, "no upload was ever listed"
    assert {(u["key"], u["peer"], u["total"]) for u in seen} == {
        ("/take.wav", b.peer_id, len(data))}
    done = [u["done"] for u in seen]
    assert done == sorted(done) and done[0] < len(data)  # advances across pieces
    assert len({d for d in done if d < len(data)}) > 10
    assert a.engine.uploads(time.time()) == []  # gone once its last byte was sent
    assert b.engine.uploads(time.time()) == []


def _save_small_file_once_big_ones_flow(a: Node, b: Node) -> Wire:
    """Start A's big files flowing to B, save a short file on A, and step the wire until
    it lands on B; returns the wire, with the big files still on their way."""
    wire = Wire(a, b, max_bytes=8192)
    while not b.engine.transfers():
        wire.step()
    small = os.urandom(3000)
    a.write("scale.wav", small)
    a.scan()
    for _ in range(10_000):
        wire.step()
        # Let the landing batch's short wait pass (no sleeping: tick at its deadline).
        due = b.engine.ctx.landing.deadline()
        if due is not None:
            b.engine.handle_timer(max(time.time(), due))
        if (b.root / "scale.wav").exists():
            break
    assert (b.root / "scale.wav").read_bytes() == small
    return wire


def test_a_small_file_lands_while_a_big_one_is_still_coming(tmp_path: Path) -> None:
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    big = os.urandom(400_000)
    a.write("concert.wav", big)
    a.scan()
    wire = _save_small_file_once_big_ones_flow(a, b)
    assert not (b.root / "concert.wav").exists()  # the big one is still on its way
    [transfer] = b.engine.transfers()
    assert transfer["done"] < len(big) // 2
    settle([a, b], [wire])
    assert (b.root / "concert.wav").read_bytes() == big


def test_an_upload_idle_between_pieces_is_held_then_forgotten():
    uploads = Uploads()
    item = uploads.queued("conn", "peer", SHA_A)
    uploads.started(item, "/take.wav", 1000, 0)
    uploads.progress(item, 400)
    uploads.ended(item)  # a piece ended; the next is not asked for yet
    uploads.confirm("conn")
    assert [u["done"] for u in uploads.views(100.0)] == [400]
    assert [u["done"] for u in uploads.views(100.0 + HOLD)] == [400]
    assert uploads.views(100.1 + HOLD) == []
    assert len(uploads) == 0


def test_uploads_end_with_their_connection_and_are_bounded():
    uploads = Uploads()
    total = MAX_UPLOADS + 50
    for i in range(total):
        item = uploads.queued(f"conn{i % 3}", "peer", f"{i:064x}")
        uploads.started(item, f"/f{i}", 1000, 0)
        if i % 2:
            uploads.ended(item)  # idle between pieces: forgotten first when full
    assert len(uploads) == MAX_UPLOADS
    keys = {u["key"] for u in uploads.views(0.0)}
    assert {f"/f{i}" for i in range(0, total, 2)} <= keys  # every running one kept
    uploads.forget("conn0")
    assert not any(int(k[2:]) % 3 == 0 for k in (u["key"] for u in uploads.views(0.0)))


def test_bytes_count_as_sent_only_when_the_connection_asks_for_more():
    uploads = Uploads()
    item = uploads.queued("conn", "peer", SHA_A)
    uploads.started(item, "/take.wav", 1000, 200)  # a resumed download: from byte 200
    uploads.progress(item, 300)  # handed out, still in the limiter or the socket
    assert [u["done"] for u in uploads.views(0.0)] == [200]
    uploads.confirm("other")
    assert [u["done"] for u in uploads.views(0.0)] == [200]
    uploads.confirm("conn")
    assert [u["done"] for u in uploads.views(0.0)] == [500]
    uploads.progress(item, 500)
    uploads.ended(item)  # all handed out, not yet sent: still listed
    assert [u["done"] for u in uploads.views(0.0)] == [500]
    uploads.confirm("conn")
    assert uploads.views(0.0) == [] and len(uploads) == 0


def test_a_small_file_is_not_left_behind_many_big_ones(tmp_path: Path) -> None:
    """B fetches two files at once: big files may take only one of the slots."""
    a = Node(tmp_path, "a")
    b = Node(tmp_path, "b", board=small_board(max_open_transfers=2))
    bigs = {f"take{i}.wav": os.urandom(120_000) for i in range(4)}
    for name, data in bigs.items():
        a.write(name, data)
    a.scan()
    wire = _save_small_file_once_big_ones_flow(a, b)
    assert not any((b.root / name).exists() for name in bigs)  # none of them done yet
    assert len(b.engine.transfers()) == 1  # the slot kept for small files is free again
    settle([a, b], [wire])
    assert all((b.root / name).read_bytes() == data for name, data in bigs.items())


def test_small_wants_are_picked_first_and_big_ones_only_when_allowed():
    queue = PickQueue(random.Random(1), is_small=lambda sha: sha.startswith("s"))
    for name in ("b1", "s1", "b2", "s2", "b3"):
        queue.add(name)
    assert {queue.pick(), queue.pick()} == {"s1", "s2"}
    assert queue.pick(big=False) is None
    queue.add("s3")
    assert queue.pick(small=False) in {"b1", "b2", "b3"}
    assert queue.pick() == "s3"
    assert len(queue) == 2


def test_the_runtime_lands_a_finished_file_at_its_deadline_while_others_still_come(
        tmp_path: Path) -> None:
    """A deadline set by received data (the landing batch's short wait) wakes the
    share's loop even when it was sleeping towards a later one (the next scan)."""
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    big = os.urandom(1_600_000)
    a.write("concert.wav", big)
    a.scan()

    async def main() -> None:
        runtime = ShareRuntime(b.engine, watch_changes=False)
        task = asyncio.create_task(runtime.run())
        decoder = Decoder()
        try:
            await runtime.wait_until(lambda e: e.stats()["scans"] >= 1, timeout=60)
            runtime.attach("a", a.info())
            a.engine.connect("b", b.info(), time.time())
            small = os.urandom(3000)
            for round_ in range(100_000):
                if round_ == 20:
                    a.write("scale.wav", small)
                    a.scan()
                for unit in b.engine.outgoing("a", 1 << 20):
                    decoder_a.receive_data(unit)
                for event in decoder_a.events():
                    a.engine.receive("b", event, time.time())
                decoder.receive_data(b"".join(a.engine.outgoing("b", 8192)))
                for event in decoder.events():
                    runtime.receive("a", event)
                await asyncio.sleep(0.002)  # a slow link: the loop runs meanwhile
                if (b.root / "scale.wav").exists():
                    break
            assert (b.root / "scale.wav").read_bytes() == small
            assert not (b.root / "concert.wav").exists()
        finally:
            runtime.stop()
            await task

    decoder_a = Decoder()
    asyncio.run(main())


def test_choosing_the_next_payload_looks_ahead_a_bounded_number():
    queue = OutgoingQueue()
    for i in range(LOOK_AHEAD):
        queue.push_stream(payload(SHA_A, 4000), size=4000, content=f"{i:064x}")
    queue.push_stream(payload(SHA_B, 10), size=10, content=SHA_B)  # beyond the look-ahead
    assert order_one(queue) == ["a"]
    assert order_one(queue) == ["b"]  # within reach now


def test_progress_lines_name_the_file_and_the_peer_both_ways():
    down = {"direction": "down", "share": "/laptop/Takes", "key": "/take.wav",
            "peer": "c7fc0cd9aa", "done": 250, "total": 1000, "peer_name": "piano"}
    up = {**down, "direction": "up", "share": "/piano/Takes", "peer_name": None}
    assert transfer_line(down, 50.0) == ("↓ [######------------------]  25.0% 250 B / 1000 B"
                                         "  50 B/s  ETA 15s  /laptop/Takes/take.wav ← piano")
    assert transfer_line(up, None).endswith("25.0% 250 B / 1000 B  /piano/Takes/take.wav"
                                            " → c7fc0cd9")
    share = {"path": "/piano/Takes", "status": "synced", "peers": 1, "transfers": [],
             "uploads": [{**up, "peer_name": "laptop"}]}
    assert render_share(share)[1] == ("    ↑ [######------------------]  25.0% 250 B / 1000 B"
                                      "  /take.wav → laptop")
