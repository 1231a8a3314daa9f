"""The sync engine between real directories and real replicas, joined in memory.

Each test builds peers (``Node``) on real folders under ``tmp_path`` and joins
them through the real wire codec (``Wire``); ``settle`` scans and delivers
until nothing moves. Network-level behaviour (TCP, encryption, kill and
resume across processes, benchmarks) is in ``test_sync_tcp.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import pytest
from test_sync_support import Node, Wire, peer_id, settle, small_board, tree

from csembed.database.record import Record
from csembed.database.vector_clock import VectorClock
from csembed.directory.engine import PeerInfo
from csembed.directory.landing import LANDING
from csembed.directory.selection import PatternSet, Selection
from csembed.directory.transfer_stream import StreamError
from csembed.protocol.wire import Decoder, Message, encode_chunk, encode_message, encode_payload_end


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def records(node: Node) -> dict[str, dict]:
    return {r.key: r.value for r in node.engine.replica.records()}


def pair(tmp_path: Path, **kwargs) -> tuple[Node, Node, Wire]:
    a = Node(tmp_path, "a", seed=1, **kwargs.pop("a", {}))
    b = Node(tmp_path, "b", seed=2, **kwargs.pop("b", {}))
    return a, b, Wire(a, b)


LONG = "L" * 240 + ".txt"


def populate(node: Node) -> None:
    node.write("docs/readme.txt", b"hello " * 500)
    node.write("docs/deep/er/still/file.bin", os.urandom(70_000))
    node.write("empty.txt", b"")
    (node.root / "empty-folder" / "inner").mkdir(parents=True)
    node.write("ünïcødé/日本語 ファイル.txt", "unicode ✓".encode())
    node.write("with spaces/a file name.txt", b"spaces")
    node.write(f"long/{LONG}", b"long name")
    node.write("same1.bin", b"dup" * 1000)
    node.write("same2.bin", b"dup" * 1000)


# -- convergence -------------------------------------------------------------------------


def test_initial_sync_then_edits_renames_deletes_converge(tmp_path):
    a, b, wire = pair(tmp_path)
    populate(a)
    settle([a, b], [wire])
    assert tree(a.root) == tree(b.root)
    assert (b.root / "empty-folder" / "inner").is_dir()
    assert (b.root / "empty.txt").read_bytes() == b""
    assert b.engine.stats()["files_copied"] >= 1  # the second of two identical files

    a.write("docs/readme.txt", b"changed")
    with (a.root / "docs/deep/er/still/file.bin").open("ab") as fh:
        fh.write(b"appended")
    os.rename(a.root / "with spaces", a.root / "renamed folder")
    os.rename(a.root / "same1.bin", a.root / "docs/moved.bin")
    os.unlink(a.root / "same2.bin")
    b.write("from-b/new.txt", b"b's file")
    settle([a, b], [wire])
    assert tree(a.root) == tree(b.root)
    assert (b.root / "renamed folder/a file name.txt").read_bytes() == b"spaces"
    assert not (b.root / "same2.bin").exists()
    assert (a.root / "from-b/new.txt").read_bytes() == b"b's file"
    # a rename travels as the same record under a new key
    keys = records(b)
    assert "/docs/moved.bin" in keys and "/same1.bin" not in keys
    assert b.engine.status()["state"] == "idle"


def test_move_keeps_the_record_uuid_and_unknown_fields(tmp_path):
    a, b, wire = pair(tmp_path)
    a.write("x.txt", b"x")
    settle([a, b], [wire])
    rec = a.engine.replica.get("/x.txt")
    value = dict(rec.value, **{".com.example.tag": 7})
    a.engine.replica.local_put("/x.txt", value, time.time_ns())
    settle([a, b], [wire])
    os.rename(a.root / "x.txt", a.root / "y.txt")
    settle([a, b], [wire])
    moved = b.engine.replica.get("/y.txt")
    assert moved.uuid == rec.uuid
    assert moved.value[".com.example.tag"] == 7
    assert (b.root / "y.txt").read_bytes() == b"x" and not (b.root / "x.txt").exists()


def test_concurrent_edit_keeps_both_contents_in_one_conflict_copy(tmp_path):
    a, b, wire = pair(tmp_path)
    a.write("c.txt", b"base")
    settle([a, b], [wire])
    wire.disconnect()
    a.write("c.txt", b"edited on a")
    settle([a], [])
    time.sleep(0.002)  # b's edit is the later one: it wins by update_time
    b.write("c.txt", b"edited on b")
    settle([b], [])
    wire.connect()
    settle([a, b], [wire])
    assert tree(a.root) == tree(b.root)
    names = sorted(p.name for p in a.root.iterdir())
    copies = [n for n in names if n.startswith("c.CONFLICT.")]
    assert len(copies) == 1 and copies[0].endswith(".txt") and len(copies[0]) == len(
        "c.CONFLICT.12345678.txt")
    assert (a.root / "c.txt").read_bytes() == b"edited on b"
    assert (a.root / copies[0]).read_bytes() == b"edited on a"
    original = a.engine.replica.get("/c.txt")
    assert a.engine.replica.get("/" + copies[0]).value["conflict_source"] == original.uuid


def test_remote_version_arriving_over_an_unseen_local_edit_is_kept_as_conflict(tmp_path):
    a, b, wire = pair(tmp_path)
    a.write("f.txt", b"v1")
    settle([a, b], [wire])
    a.write("f.txt", b"v2 from a")
    a.scan()
    b.write("f.txt", b"local edit on b, not scanned yet")
    settle([a, b], [wire], scan=False)  # v2 arrives while b's edit is unseen
    settle([a, b], [wire])
    assert tree(a.root) == tree(b.root)
    contents = sorted((p.read_bytes()) for p in a.root.iterdir())
    assert contents == [b"local edit on b, not scanned yet", b"v2 from a"]


def test_local_edit_scanned_before_the_remote_version_arrived_keeps_that_version(tmp_path):
    a, b, wire = pair(tmp_path)
    a.write("f.txt", b"v1")
    settle([a, b], [wire])
    a.write("f.txt", b"v2 from a")
    serve = a.local.reader.open
    a.local.reader.open = lambda digest: None  # a cannot serve v2 yet
    settle([a, b], [wire])
    assert (b.root / "f.txt").read_bytes() == b"v1"  # b knows of v2 but has not got it
    b.write("f.txt", b"b edited v1")
    b.scan()
    a.local.reader.open = serve
    b.engine.handle_timer(time.time() + 61)  # a said not_present: b asks again a minute later
    settle([a, b], [wire])
    assert tree(a.root) == tree(b.root)
    assert (a.root / "f.txt").read_bytes() == b"b edited v1"
    copies = [p for p in a.root.iterdir() if ".CONFLICT." in p.name]
    assert len(copies) == 1 and copies[0].read_bytes() == b"v2 from a"


def test_remote_delete_never_removes_a_file_changed_locally_unseen(tmp_path):
    a, b, wire = pair(tmp_path)
    a.write("keep.txt", b"v1")
    settle([a, b], [wire])
    os.unlink(a.root / "keep.txt")
    a.scan()
    b.write("keep.txt", b"b changed it")
    settle([a, b], [wire], scan=False)
    assert (b.root / "keep.txt").read_bytes() == b"b changed it"
    settle([a, b], [wire])
    assert (a.root / "keep.txt").read_bytes() == b"b changed it"
    assert any("not deleted" in n["reason"] for n in b.engine.status()["notices"])


def test_deleted_file_goes_to_the_archive_and_serves_dedup(tmp_path):
    a, b, wire = pair(tmp_path)
    data = os.urandom(50_000)
    a.write("f.bin", data)
    settle([a, b], [wire])
    os.unlink(a.root / "f.bin")
    settle([a, b], [wire])
    assert not (b.root / "f.bin").exists()
    assert [e.sha256 for e in b.local.archive.entries()] == [sha(data)]
    received = b.engine.stats()["payload_received"]
    a.write("back.bin", data)
    settle([a, b], [wire])
    assert (b.root / "back.bin").read_bytes() == data
    assert b.engine.stats()["payload_received"] - received < 1000  # copied from the archive


# -- rsync ---------------------------------------------------------------------------------


def test_appended_file_is_fetched_by_rsync_delta(tmp_path):
    a, b, wire = pair(tmp_path)
    a.write("log.bin", os.urandom(2_000_000))
    settle([a, b], [wire])
    before = b.engine.stats()
    with (a.root / "log.bin").open("ab") as fh:
        fh.write(os.urandom(10_000))
    settle([a, b], [wire])
    after = b.engine.stats()
    assert tree(a.root) == tree(b.root)
    assert after["files_rsync"] == before["files_rsync"] + 1
    assert after["payload_received"] - before["payload_received"] < 100_000


def test_without_the_rsync_extension_the_whole_file_is_fetched(tmp_path):
    plain = frozenset({"database", "directory"})
    a, b, wire = pair(tmp_path, b={"extensions": plain})
    a.write("log.bin", os.urandom(2_000_000))
    settle([a, b], [wire])
    before = b.engine.stats()["payload_received"]
    with (a.root / "log.bin").open("ab") as fh:
        fh.write(b"tail")
    settle([a, b], [wire])
    assert b.engine.stats()["files_rsync"] == 0
    assert b.engine.stats()["payload_received"] - before >= 2_000_000
    assert tree(a.root) == tree(b.root)


def test_signature_over_the_board_limit_falls_back_to_a_whole_get(tmp_path):
    board = small_board(max_signature=64 * 1024)
    a, b, wire = pair(tmp_path, b={"board": board})
    a.write("big.bin", os.urandom(8_000_000))  # its signature is ~ 0.2 MB
    settle([a, b], [wire])
    with (a.root / "big.bin").open("ab") as fh:
        fh.write(b"x")
    settle([a, b], [wire])
    assert b.engine.stats()["files_rsync"] == 0
    assert tree(a.root) == tree(b.root)


def test_a_corrupt_delta_falls_back_to_a_whole_get(tmp_path):
    a, b, wire = pair(tmp_path)
    a.write("f.bin", os.urandom(2_000_000))
    settle([a, b], [wire])
    with (a.root / "f.bin").open("ab") as fh:
        fh.write(b"more")
    real = a.engine.outgoing
    state = {"in_patch": False, "corrupted": 0}

    def tampering(conn, max_bytes=1 << 20):
        out = []
        for unit in real(conn, max_bytes):
            if unit.startswith(b"!"):
                state["in_patch"] = b"rsync.patch" in unit
            elif state["in_patch"] and unit != b"0\n" and not state["corrupted"]:
                head, _, body = unit.partition(b"\n")
                unit = head + b"\n" + b"\xff" * len(body)  # reserved opcodes
                state["corrupted"] += 1
            out.append(unit)
        return out
    a.engine.outgoing = tampering  # type: ignore[method-assign]
    settle([a, b], [wire])
    assert state["corrupted"] == 1
    assert tree(a.root) == tree(b.root)
    assert b.engine.stats()["files_rsync"] == 0


# -- presence, errors, resume, streaming ---------------------------------------------------


def test_not_present_sends_us_to_another_peer(tmp_path):
    a = Node(tmp_path, "a", seed=1)
    b = Node(tmp_path, "b", seed=2, selection=Selection(partial=PatternSet(["*.bin"])))
    c = Node(tmp_path, "c", seed=3)
    data = b"payload" * 1000
    a.write("f.bin", data)
    ab, bc = Wire(a, b), Wire(b, c)
    settle([a, b, c], [ab, bc])  # c learns of f.bin through b, which never fetches it
    assert not (b.root / "f.bin").exists() and not (c.root / "f.bin").exists()
    assert c.engine.status()["waiting_for_peers"] == 1
    c.engine.ctx.peers["b"].present.add(sha(data))  # a false claim: c asks b
    c.engine.ctx.planner.queue.wake()
    sent_by_b = []
    real = b.engine.outgoing

    def spy(conn, max_bytes=1 << 20):
        units = real(conn, max_bytes)
        sent_by_b.extend(u for u in units if b"directory.not_present" in u)
        return units
    b.engine.outgoing = spy  # type: ignore[method-assign]
    settle([a, b, c], [ab, bc])
    assert len(sent_by_b) == 1 and not (c.root / "f.bin").exists()
    ac = Wire(a, c)
    settle([a, b, c], [ab, bc, ac])
    assert (c.root / "f.bin").read_bytes() == data


def test_peer_get_error_bans_that_content_and_is_reported(tmp_path):
    b = Node(tmp_path, "b", seed=2)
    rogue = RawPeer(b)
    content = b"data" * 10
    rogue.update("/f.bin", {"size": len(content), "sha256": sha(content)})
    gets = rogue.requests()
    assert [g.body["sha256"] for g in gets] == [sha(content)]
    rogue.send({"type": "directory.get_error", "sha256": sha(content),
                "message": "Permission denied"})
    b.engine.handle_timer(time.time() + 60)
    assert rogue.requests() == []  # not asked again
    status = b.engine.status()
    assert any("Permission denied" in f["reason"] for f in status["failures"])
    b.engine.handle_timer(time.time() + 5 * 3600)  # hours later it may ask again
    assert [g.body["sha256"] for g in rogue.requests()] == [sha(content)]


def test_disconnected_download_resumes_with_a_range_request(tmp_path):
    board = small_board(chunk_size=64 * 1024, max_bytes_in_flight=256 * 1024)
    a, b, wire = pair(tmp_path, a={"board": board}, b={"board": board})
    data = os.urandom(3_000_000)
    a.write("big.bin", data)
    a.scan()
    b.scan()
    moved = 0
    while moved < 1_000_000:
        moved += wire.step(limit=64 * 1024)
    [progress] = b.engine.transfers()
    assert progress["key"] == "/big.bin" and progress["peer"] == a.peer_id
    assert 0 < progress["done"] < progress["total"] == len(data)
    status = b.engine.status()
    assert status["state"] == "syncing" and status["files_to_sync"] == 1
    assert 0 < status["bytes_to_sync"] < len(data)
    wire.disconnect()
    temps = [p for p in b.root.iterdir() if p.name.endswith(".!clearsky")]
    assert len(temps) == 1 and 0 < temps[0].stat().st_size < len(data)
    b.restart()
    wire.b = b
    wire.connect()
    got = []
    original = b.engine.receive

    def spy(conn, event, now):
        if isinstance(event, Message) and event.type == "directory.data":
            got.append(event.body["range"])
        original(conn, event, now)
    b.engine.receive = spy  # type: ignore[method-assign]
    settle([a, b], [wire])
    assert (b.root / "big.bin").read_bytes() == data
    assert got[0][0] > 0  # the first range after the restart starts where the temp ended
    assert not [p for p in b.root.iterdir() if p.name.endswith(".!clearsky")]


def test_a_partial_of_a_version_no_longer_wanted_is_removed_at_once(tmp_path):
    board = small_board(chunk_size=64 * 1024, max_bytes_in_flight=256 * 1024)
    a, b, wire = pair(tmp_path, a={"board": board}, b={"board": board})
    a.write("big.bin", os.urandom(2_000_000))
    a.write("other.bin", os.urandom(2_000_000))
    a.scan()
    b.scan()
    while len(b.engine.transfers()) < 2 or min(t["done"] for t in b.engine.transfers()) == 0:
        assert wire.step(limit=64 * 1024)
    wire.disconnect()
    temps = sorted(p.name for p in b.root.iterdir() if p.name.endswith(".!clearsky"))
    assert len(temps) == 2
    (a.root / "big.bin").unlink()  # superseded while B holds a partial of it
    a.write("other.bin", b"a newer, smaller version")
    a.scan()
    wire.connect()
    while wire.step(limit=64 * 1024):  # B learns of the deletion and the new version
        pass
    b.scan()
    assert not [p for p in b.root.iterdir() if p.name.endswith(".!clearsky")]
    settle([a, b], [wire])
    assert b.tree() == a.tree()


def test_presence_filter_nothing_means_no_requests_until_present(tmp_path):
    b = Node(tmp_path, "b", seed=2)
    rogue = RawPeer(b, presence=b"\x00")
    content = b"zzz" * 10
    rogue.update("/z.bin", {"size": len(content), "sha256": sha(content)})
    assert rogue.requests() == []
    rogue.send({"type": "directory.present", "sha256": sha(content)})
    assert [g.body["sha256"] for g in rogue.requests()] == [sha(content)]


def test_streaming_reads_ranges_through_a_bounded_cache(tmp_path):
    board = small_board(chunk_size=4096)
    a, b, wire = pair(tmp_path, a={"board": board},
                      b={"board": board, "selection": Selection(partial=PatternSet(["*.bin"]))})
    data = os.urandom(100_000)
    a.write("song.bin", data)
    settle([a, b], [wire])
    assert not (b.root / "song.bin").exists()  # partial copy: not fetched
    stream = b.engine.open_stream("/song.bin")
    for offset, count in ((0, 100), (50_000, 5000), (99_990, 100), (4000, 200)):
        result = b.engine.stream_read(stream, offset, count)
        while result is None:
            wire.step()
            result = b.engine.stream_read(stream, offset, count)
        assert result == data[offset:offset + count]
        assert stream.cached_bytes <= stream.max_blocks * 4096
    assert not [p for p in b.root.iterdir()]
    b.engine.close_stream(stream)
    wire.disconnect()
    alone = b.engine.open_stream("/song.bin")
    with pytest.raises(StreamError):
        b.engine.stream_read(alone, 0, 10)  # no connected peer has it
    with pytest.raises(StreamError):
        b.engine.open_stream("/missing.bin")


# -- selection, access levels, limits ------------------------------------------------------


def test_ignore_patterns_keep_files_local_both_ways(tmp_path):
    sel = Selection(ignore=PatternSet(["*.tmp", "build/"]))
    a, b, wire = pair(tmp_path, a={"selection": sel}, b={"selection": sel})
    a.write("keep.txt", b"k")
    a.write("scratch.tmp", b"a's scratch")
    a.write("build/out.o", b"obj")
    b.write("scratch.tmp", b"b's own scratch")
    settle([a, b], [wire])
    assert (b.root / "keep.txt").read_bytes() == b"k"
    assert (b.root / "scratch.tmp").read_bytes() == b"b's own scratch"
    assert not (b.root / "build").exists()
    assert set(records(b)) == {"/", "/keep.txt"}


def test_partial_copy_does_not_fetch_but_still_sends(tmp_path):
    sel = Selection(partial=PatternSet(["videos/"]))
    a, b, wire = pair(tmp_path, b={"selection": sel})
    a.write("videos/big.mov", b"movie" * 1000)
    a.write("notes.txt", b"notes")
    b.write("videos/mine.mov", b"b's movie")
    settle([a, b], [wire])
    assert not (b.root / "videos/big.mov").exists()
    assert (b.root / "notes.txt").read_bytes() == b"notes"
    assert (a.root / "videos/mine.mov").read_bytes() == b"b's movie"


def test_subtree_copy_holds_only_that_folder(tmp_path):
    a, b, wire = pair(tmp_path, b={"selection": Selection(subtree="/Music")})
    a.write("Music/song.mp3", b"la la")
    a.write("Music/albums/x.mp3", b"xx")
    a.write("Photos/p.jpg", b"photo")
    settle([a, b], [wire])
    assert tree(b.root) == {"song.mp3": sha(b"la la"), "albums": None,
                            "albums/x.mp3": sha(b"xx")}
    b.write("new.mp3", b"from b")
    settle([a, b], [wire])
    assert (a.root / "Music/new.mp3").read_bytes() == b"from b"


def test_read_only_peer_receives_but_never_sends_and_restores_local_edits(tmp_path):
    a, b, wire = pair(tmp_path, b={"read_only": True})
    a.write("doc.txt", b"original")
    settle([a, b], [wire])
    assert (b.root / "doc.txt").read_bytes() == b"original"
    b.write("doc.txt", b"edited on the read-only peer")
    b.write("extra.txt", b"local addition")
    settle([a, b], [wire])
    assert (a.root / "doc.txt").read_bytes() == b"original"
    assert not (a.root / "extra.txt").exists()
    assert (b.root / "doc.txt").read_bytes() == b"original"
    kept = [p for p in b.root.iterdir() if ".CONFLICT." in p.name]
    assert len(kept) == 1 and kept[0].read_bytes() == b"edited on the read-only peer"
    assert (b.root / "extra.txt").read_bytes() == b"local addition"
    reasons = " ".join(n["reason"] for n in b.engine.status()["notices"])
    assert "read-only" in reasons
    os.unlink(b.root / "doc.txt")
    settle([a, b], [wire])
    assert (b.root / "doc.txt").read_bytes() == b"original"
    a.write("doc.txt", b"new from a")
    settle([a, b], [wire])
    assert (b.root / "doc.txt").read_bytes() == b"new from a"


def test_files_over_the_storage_limits_are_not_downloaded_and_say_why(tmp_path):
    board = small_board()
    board = dataclasses.replace(board, storage=dataclasses.replace(
        board.storage, max_file_size=10_000, quota=0))
    a, b, wire = pair(tmp_path, b={"board": board})
    a.write("small.txt", b"s" * 100)
    a.write("large.bin", b"L" * 20_000)
    settle([a, b], [wire])
    assert (b.root / "small.txt").exists() and not (b.root / "large.bin").exists()
    limits = b.engine.status()["limits"]
    assert [(x["key"], x["limit"]) for x in limits] == [("/large.bin", "max_file_size")]
    assert "20000" in limits[0]["message"]


# -- hostile peers -------------------------------------------------------------------------


class RawPeer:
    """A peer that speaks the wire by hand (and may lie)."""

    def __init__(self, victim: Node, presence: bytes = b"\xff", name: str = "rogue") -> None:
        self.victim = victim
        self.name = name
        self.id = peer_id(name)
        self.rev = 0
        self.decoder = Decoder()
        victim.engine.connect(name, PeerInfo(self.id, False), time.time())
        self.inbox: list = []
        self.drain()
        self.send({"type": "database.get_updates", "since": {}})
        self.send({"type": "directory.bloom_filter", "k_value": 1}, payload=[presence])

    def send(self, body: dict, payload: list[bytes] | None = None) -> None:
        data = encode_message(body, payload=payload is not None)
        if payload is not None:
            data += b"".join(encode_chunk(p) for p in payload) + encode_payload_end()
        decoder = Decoder()
        decoder.receive_data(data)
        for event in decoder.events():
            self.victim.engine.receive(self.name, event, time.time())

    def update(self, key: str, value, *, deleted: bool = False) -> None:
        self.rev += 1
        record = Record(key=key, value=value, uuid=hashlib.md5(key.encode()).hexdigest(),
                        last_updated_by=self.id, last_updated_rev=self.rev,
                        update_time=time.time_ns(), vector_clock=VectorClock({self.id: self.rev}),
                        deleted=deleted, raw=b"")
        self.send(record.to_body())

    def drain(self) -> None:
        engine = self.victim.engine
        while engine.has_outgoing(self.name):
            units = engine.outgoing(self.name)
            self.decoder.receive_data(b"".join(units))
            self.inbox.extend(e for e in self.decoder.events() if isinstance(e, Message))

    def requests(self) -> list[Message]:
        self.drain()
        out = [m for m in self.inbox if m.type == "directory.get"]
        self.inbox = [m for m in self.inbox if m.type != "directory.get"]
        return out


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.rglob("*") if not p.is_symlink()}


def test_malicious_records_are_rejected_with_a_reason_and_touch_nothing_outside(
        tmp_path, caplog):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_bytes(b"do not touch")
    b = Node(tmp_path, "b", seed=2)
    os.symlink(outside, b.root / "link")
    b.scan()
    before_outside = snapshot(outside)
    rogue = RawPeer(b)
    evil = b"evil" * 10
    caplog.set_level(logging.INFO)
    bad_keys = ["/../escape.txt", "/a/../../escape.txt", "//abs.txt", "/a\\b.txt",
                "/nul\x00.txt", "/ctl\x07.txt", "/link/precious.txt", "/link/new.txt",
                "/trailing/", "/./dot.txt", "/" + "n" * 1100]
    for n, key in enumerate(bad_keys):  # distinct contents: each key is fetched on its own
        content = b"evil %d" % n
        rogue.update(key, {"size": len(content), "sha256": sha(content)})
    rogue.update("/bad-value.txt", {"size": "many", "sha256": "nope"})
    rogue.update("/huge.bin", {"size": (1 << 62), "sha256": sha(b"x")})
    rogue.update("/wrong-sha.bin", {"size": len(evil), "sha256": sha(evil)})
    # Answer every request with bytes that do not match the record.
    for request in rogue.requests():
        start, count = request.body["range"]
        rogue.send({"type": "directory.data", "sha256": request.body["sha256"],
                    "range": [start, count]}, payload=[b"X" * count])
    b.engine.handle_timer(time.time())
    assert snapshot(outside) == before_outside
    assert os.readlink(b.root / "link") == str(outside)
    assert sorted(p.name for p in b.root.iterdir()) == ["link"]
    status = b.engine.status()
    rejected = {r["key"]: r["reason"] for r in status["rejected"]}
    for key in bad_keys[:-1]:
        assert key in rejected, key
    assert "symbolic link" in rejected["/link/precious.txt"]
    assert "'..'" in rejected["/../escape.txt"]
    assert "/bad-value.txt" in rejected
    assert any(x["key"] == "/huge.bin" for x in status["limits"])
    assert any(f["key"] == "/wrong-sha.bin" and "sha256" in f["reason"]
               for f in status["failures"])
    assert "rejected record" in caplog.text
    assert not [p for p in b.root.rglob("*.!clearsky")]


def test_oversized_presence_filter_and_garbage_messages_are_survived(tmp_path):
    b = Node(tmp_path, "b", seed=2)
    rogue = RawPeer(b)
    rogue.send({"type": "directory.bloom_filter", "k_value": 99}, payload=[b"\x01"])
    rogue.send({"type": "directory.get", "sha256": "zz"})
    rogue.send({"type": "directory.get", "sha256": "a" * 64, "range": [-1, 5]})
    rogue.send({"type": "directory.data", "sha256": "b" * 64}, payload=[b"unasked"])
    rogue.send({"type": "rsync.signature", "sha256": "c" * 64}, payload=[b"not a sig"])
    rogue.send({"type": "directory.bloom_filter", "k_value": 3},
               payload=[b"\xff" * (1 << 20), b"\xff"])
    rogue.drain()
    kinds = [m.type for m in rogue.inbox]
    assert "directory.get_error" in kinds  # the bad signature
    assert b.engine.ctx.peers["rogue"].filter.is_everything
    assert json.dumps(b.engine.status())


def test_a_missing_share_root_is_an_error_state_never_a_mass_deletion(tmp_path):
    a, b, wire = pair(tmp_path)
    a.write("one.txt", b"1")
    a.write("two.txt", b"2")
    settle([a, b], [wire])
    away = tmp_path / "unmounted"
    os.rename(b.root, away)
    b.root.mkdir()  # an empty mount point where the share was
    b.scan()
    status = b.engine.status()
    assert status["state"] == "error" and "not the directory" in status["reason"]
    settle([a, b], [wire], scan=False)
    assert sorted(p.name for p in a.root.iterdir()) == ["one.txt", "two.txt"]
    os.rmdir(b.root)
    os.rename(away, b.root)
    settle([a, b], [wire])
    assert b.engine.status()["state"] == "idle"
    assert tree(a.root) == tree(b.root)


def test_quota_counts_what_the_share_holds(tmp_path):
    board = small_board()
    board = dataclasses.replace(board, storage=dataclasses.replace(board.storage, quota=30_000))
    a, b, wire = pair(tmp_path, b={"board": board})
    a.write("first.bin", b"1" * 20_000)
    settle([a, b], [wire])
    a.write("second.bin", b"2" * 20_000)
    settle([a, b], [wire])
    assert (b.root / "first.bin").exists() and not (b.root / "second.bin").exists()
    [limit] = b.engine.status()["limits"]
    assert limit["key"] == "/second.bin" and limit["limit"] == "quota"


def test_a_mode_change_alone_is_applied_without_a_transfer(tmp_path):
    a, b, wire = pair(tmp_path)
    a.write("run.sh", b"#!/bin/sh\n")
    os.chmod(a.root / "run.sh", 0o644)
    settle([a, b], [wire])
    received = b.engine.stats()["payload_received"]
    os.chmod(a.root / "run.sh", 0o4755)  # set-uid is never applied from a peer
    settle([a, b], [wire])
    assert (b.root / "run.sh").stat().st_mode & 0o7777 == 0o755
    assert b.engine.stats()["payload_received"] == received
    b.scan()
    assert b.engine.last_scan.events == []  # our own chmod is not reported back


# -- batched landing (shared syncs for many small files) ---------------------------------


def _spy_batches(node: Node) -> list[int]:
    sizes: list[int] = []
    real = node.local.store.commit_batch

    def commit_batch(downloads):
        sizes.append(len(downloads))
        return real(downloads)

    node.local.store.commit_batch = commit_batch  # type: ignore[method-assign]
    return sizes


def test_many_small_files_land_in_batches(tmp_path):
    a, b, wire = pair(tmp_path, b={"board": small_board(max_open_transfers=8)})
    for i in range(60):
        a.write(f"many/d{i % 4}/f{i:02d}", os.urandom(100 + i))
    batches = _spy_batches(b)
    settle([a, b], [wire])
    assert tree(a.root) == tree(b.root)
    assert b.engine.stats()["files_fetched"] == 60
    assert sum(batches) == 60 and len(batches) < 30  # syncs shared by several files each
    assert max(batches) <= LANDING["normal"][0]
    assert b.engine.status()["state"] == "idle"


def test_flash_board_holds_verified_files_until_the_landing_deadline(tmp_path):
    board = small_board(max_open_transfers=2, max_bytes_in_flight=8192)
    board = dataclasses.replace(board, storage=dataclasses.replace(board.storage,
                                                                   write_policy="flash"))
    a, b, wire = pair(tmp_path, b={"board": board})
    a.write("big.bin", os.urandom(300_000))
    a.write("small.txt", b"tiny")
    a.scan()
    seen_waiting = False
    for _ in range(10_000):
        if b.engine.ctx.landing.keys():
            # verified, not yet in place: the engine asks to be ticked soon for it
            assert not (b.root / "small.txt").exists()
            assert b.engine.status()["state"] == "syncing"
            now = time.time()
            deadline = b.engine.get_timer()
            assert deadline is not None and deadline <= now + 0.25 + 1
            b.engine.handle_timer(b.engine.ctx.landing.deadline() + 0.001)
            assert (b.root / "small.txt").read_bytes() == b"tiny"
            seen_waiting = True
            break
        if not wire.step(limit=4096):
            break
    assert seen_waiting
    settle([a, b], [wire])
    assert tree(a.root) == tree(b.root)


def test_a_record_changed_while_its_file_waits_to_land_is_not_put_in_place(tmp_path):
    board = small_board(max_open_transfers=2, max_bytes_in_flight=8192)
    board = dataclasses.replace(board, storage=dataclasses.replace(board.storage,
                                                                   write_policy="flash"))
    a, b, wire = pair(tmp_path, b={"board": board})
    a.write("big.bin", os.urandom(300_000))
    a.write("small.txt", b"first")
    a.scan()
    for _ in range(10_000):
        if b.engine.ctx.landing.keys() or not wire.step(limit=4096):
            break
    assert b.engine.ctx.landing.keys() == ["/small.txt"]
    # A newer version is written on a, scanned and its record reaches b first.
    a.write("small.txt", b"second, newer")
    a.scan()
    while not b.engine.ctx.planner.still_wants("/small.txt", sha(b"second, newer")):
        assert wire.step(limit=4096)
    assert b.engine.ctx.landing.keys() == ["/small.txt"]  # still waiting
    b.engine.handle_timer(time.time() + 5)  # the batch comes due: the stale file must not land
    assert not (b.root / "small.txt").exists() or \
        (b.root / "small.txt").read_bytes() == b"second, newer"
    settle([a, b], [wire])
    assert (b.root / "small.txt").read_bytes() == b"second, newer"
    assert tree(a.root) == tree(b.root)


def test_a_scan_slice_stops_by_the_clock_its_call_lends(tmp_path):
    # the engine keeps no clock: the call that starts a slice lends one with its deadline
    a, _, _ = pair(tmp_path)
    for i in range(3):
        a.write(f"f{i}.bin", bytes(1000))
    ticks = iter(range(1000))
    assert not a.engine.scan(time.time(), until=1.5, clock=lambda: float(next(ticks)))
    assert a.engine.scanning
    assert a.engine.scan(time.time())  # without a deadline the pass runs to its end
    assert not a.engine.scanning and a.engine.replica.get("/f2.bin") is not None
