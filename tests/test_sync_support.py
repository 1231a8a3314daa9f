"""Shared set-up for the sync engine tests (no tests of its own).

``Node`` is one peer of a share: real directories under ``tmp_path``, a real
SQLite replica, a :class:`ShareEngine`. ``Wire`` joins two nodes in memory:
what one engine's ``outgoing`` produces is decoded by a real wire
:class:`Decoder` and fed to the other's ``receive``, so framing, payload
chunking and signatures are exercised without sockets. ``settle`` runs scans
and delivers until nothing moves (the state in which peers must agree).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import time
from pathlib import Path

import nacl.signing

from csembed.board_profile import BoardProfile, load_board
from csembed.database import Replica, Store, ed25519_signer, ed25519_verifier
from csembed.directory.engine import PeerInfo, ShareEngine
from csembed.directory.local_share import LocalShare, open_local_share
from csembed.directory.selection import Selection, save_selection
from csembed.protocol.wire import Decoder
from csembed.security.keys import READ_WRITE, ShareKeys

SHARE = ShareKeys.generate(random.Random(42).randbytes)
RW_SEED = SHARE.level(READ_WRITE).signing_key or b""
VERIFY_KEY = bytes(nacl.signing.SigningKey(RW_SEED).verify_key)


def peer_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def small_board(**memory: int) -> BoardProfile:
    """The desktop profile with small chunks, so payloads span many chunks."""
    board = load_board("desktop")
    mem = dataclasses.replace(board.memory, **({"chunk_size": 4096, "io_buffer": 4096}
                                               | memory))
    storage = dataclasses.replace(board.storage, free_space_reserve=0)
    return dataclasses.replace(board, memory=mem, storage=storage)


class Node:
    """One peer of the share under test."""

    def __init__(self, tmp_path: Path, name: str, *, read_only: bool = False,
                 board: BoardProfile | None = None, selection: Selection | None = None,
                 seed: int = 1, extensions: frozenset[str] | None = None) -> None:
        self.name = name
        self.root = tmp_path / name
        self.root.mkdir(exist_ok=True)
        self.state = tmp_path / f"{name}-state"
        self.state.mkdir(exist_ok=True)
        if selection is not None:
            save_selection(self.state, selection)
        self.read_only = read_only
        self.peer_id = peer_id(name)
        self.board = board or small_board()
        self.seed = seed
        self.extensions = extensions or frozenset({"database", "directory", "rsync"})
        self.local: LocalShare = open_local_share(self.root, self.state, self.board,
                                                  create=True, rng=random.Random(seed),
                                                  settle=0.0)
        self.engine = self._engine()

    def _engine(self) -> ShareEngine:
        store = Store(self.state / "records.sqlite3", peer_id=self.peer_id)
        replica = Replica(store, read_only=self.read_only, verify=ed25519_verifier(VERIFY_KEY),
                          sign=None if self.read_only else ed25519_signer(RW_SEED),
                          rng=random.Random(f"{self.name}{self.seed}").randbytes)
        return ShareEngine(self.local, replica, self.board, random.Random(self.seed),
                           extensions=self.extensions)

    def restart(self) -> None:
        """Close and reopen everything from disk (as after a crash or restart)."""
        self.engine.close()
        self.engine.replica.store.close()
        self.local.close()
        self.local = open_local_share(self.root, self.state, self.board,
                                      rng=random.Random(self.seed), settle=0.0)
        self.engine = self._engine()

    def info(self) -> PeerInfo:
        return PeerInfo(self.peer_id, self.read_only, self.extensions)

    def scan(self) -> None:
        self.engine.scan(time.time())

    def write(self, rel: str, data: bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def tree(self) -> dict[str, str | None]:
        """Every file and folder under the root: relative path -> sha256 (None: folder)."""
        return tree(self.root)


def tree(root: Path) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for d in dirnames:
            out[str((base / d).relative_to(root))] = None
        for f in filenames:
            path = base / f
            if f.endswith(".!clearsky"):
                out[str(path.relative_to(root))] = "TEMP"
                continue
            h = hashlib.sha256()
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            out[str(path.relative_to(root))] = h.hexdigest()
    return out


class Wire:
    """Two nodes joined in memory through the real wire codec."""

    def __init__(self, a: Node, b: Node, *, max_bytes: int = 1 << 20) -> None:
        self.a, self.b = a, b
        self.max_bytes = max_bytes
        self.decoders = {("a", "b"): Decoder(), ("b", "a"): Decoder()}
        self.bytes = {("a", "b"): 0, ("b", "a"): 0}
        self.open = False
        self.connect()

    def connect(self) -> None:
        now = time.time()
        self.decoders = {("a", "b"): Decoder(), ("b", "a"): Decoder()}
        self.a.engine.connect(self.b.name, self.b.info(), now)
        self.b.engine.connect(self.a.name, self.a.info(), now)
        self.open = True

    def disconnect(self) -> None:
        self.a.engine.disconnect(self.b.name)
        self.b.engine.disconnect(self.a.name)
        self.open = False

    def step(self, limit: int | None = None) -> int:
        """Move one round of output both ways; returns the bytes moved."""
        moved = 0
        for src, dst, key in ((self.a, self.b, ("a", "b")), (self.b, self.a, ("b", "a"))):
            units = src.engine.outgoing(dst.name, limit or self.max_bytes)
            while not units and src.engine.has_outgoing(dst.name):
                units = src.engine.outgoing(dst.name, limit or self.max_bytes)
            if not units:
                continue
            data = b"".join(units)
            moved += len(data)
            self.bytes[key] += len(data)
            decoder = self.decoders[key]
            decoder.receive_data(data)
            now = time.time()
            for event in decoder.events():
                dst.engine.receive(src.name, event, now)
        return moved


def settle(nodes: list[Node], wires: list[Wire], *, rounds: int = 100_000,
           scan: bool = True) -> None:
    """Scan every node, then deliver until quiet; repeat until a scan finds nothing."""
    for _ in range(20):
        if scan:
            for node in nodes:
                node.scan()
        for _ in range(rounds):
            now = time.time()
            for node in nodes:
                node.engine.handle_timer(now)
            if not sum(w.step() for w in wires if w.open):
                break
        else:
            raise AssertionError("the network did not go quiet")
        if not scan:
            return
        busy = False
        for node in nodes:
            node.scan()
            result = node.engine.last_scan
            if result is not None and (result.events or result.pending):
                busy = True
        if not busy and not any(w.open and (w.a.engine.has_outgoing(w.b.name)
                                            or w.b.engine.has_outgoing(w.a.name))
                                for w in wires):
            return
    raise AssertionError("nodes kept changing")
