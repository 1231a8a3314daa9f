"""Benchmark the database replica against bare SQLite, in one run.

Each figure is printed next to an anchor measured in the same process, on a
file in the same directory with the same board durability settings:

* local writes (``Replica.local_put``: one transaction each) vs. a bare
  ``INSERT`` of the same body bytes with one commit each -- the floor cost of
  one durable transaction per record;
* applying received updates (``Replica.receive``, read-write peer, unsigned)
  vs. the same bare insert;
* applying signed updates on a read-only peer (Ed25519 check included) vs.
  the bare insert plus PyNaCl's verify alone;
* the same two with :meth:`Replica.batch` (one commit per 256 records) vs.
  the bare insert committing every 256 rows;
* serving a ``get_updates`` backlog (``Replica.pull``) vs. a bare ``SELECT``
  of the bodies in revision order.

Usage: ``python tools/bench/database.py [--records 5000] [--board wifi-piano] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

import nacl.signing
from _timing import best_time

from csembed.board_profile import load_board
from csembed.database import Replica, Store, ed25519_signer, ed25519_verifier
from csembed.protocol.wire import Message, encode_body, parse_body

SEED = bytes(range(32))
BATCH = 256


def bare_insert(path: Path, bodies: list[bytes], synchronous: str, pages: int,
                verify: Callable[[bytes, bytes], bool] | None = None,
                signatures: list[bytes] | None = None, batch: int = 1) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute(f"PRAGMA wal_autocheckpoint={pages}")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
    for i, body in enumerate(bodies):
        if verify is not None and signatures is not None:
            verify(body, signatures[i])
        if i % batch == 0:
            db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (body) VALUES (?)", (body,))
        if i % batch == batch - 1 or i == len(bodies) - 1:
            db.execute("COMMIT")
    db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--board", default="wifi-piano")
    ap.add_argument("--dir", default=None, help="where the files go (default: a temp dir)")
    args = ap.parse_args()
    storage = load_board(args.board).storage
    sync, pages = storage.db_synchronous, storage.db_checkpoint_pages
    sign = ed25519_signer(SEED)
    verify = ed25519_verifier(bytes(nacl.signing.SigningKey(SEED).verify_key))
    n = args.records
    rows: list[tuple[str, float, str, float]] = []

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)

        def replica(name: str, peer: str, read_only: bool = False) -> Replica:
            store = Store(base / f"{name}.sqlite3", peer_id=peer, synchronous=sync,
                          checkpoint_pages=pages)
            return Replica(store, read_only=read_only, verify=verify,
                           sign=None if read_only else sign, rng=random.Random(name).randbytes)

        source = replica("source", "a" * 32)
        keys = [f"recordings/take-{i:05d}.wav" for i in range(n)]
        values = [{"sha256": f"{i:064x}", "size": 1000 + i, "mtime": "2024-01-01T00:00:00Z"}
                  for i in range(n)]
        t = best_time(lambda: [source.local_put(k, v, i) for i, (k, v) in
                           enumerate(zip(keys, values, strict=True))])
        bodies = [r.raw for r in source.store.iter_versions()]
        anchor = best_time(lambda: bare_insert(base / "bare1.sqlite3", bodies, sync, pages))
        rows.append(("local_put", n / t, "bare INSERT+COMMIT", n / anchor))

        batched = replica("batched", "d" * 32)

        def put_batched() -> None:
            for start in range(0, n, BATCH):
                with batched.batch():
                    for i in range(start, min(n, start + BATCH)):
                        batched.local_put(keys[i], values[i], i)

        t = best_time(put_batched)
        anchor = best_time(lambda: bare_insert(base / "bare4.sqlite3", bodies, sync, pages,
                                           batch=BATCH))
        rows.append((f"local_put, batch({BATCH})", n / t, f"bare INSERT, COMMIT/{BATCH}",
                     n / anchor))

        get_updates = encode_body({"type": "database.get_updates", "since": {}})
        request = Message(body=parse_body(get_updates), raw=get_updates)

        def backlog(conn: str, read_only: bool) -> list[Message]:
            source.attach(conn, peer_read_only=read_only)
            out = source.receive(conn, request)
            while source.has_pending(conn):
                out += source.pull(conn)
            return [o.message() for o in out]

        t = best_time(lambda: backlog("reader", False))
        db = sqlite3.connect(base / "source.sqlite3")
        anchor = best_time(lambda: db.execute(
            "SELECT body FROM records ORDER BY last_updated_rev").fetchall())
        db.close()
        rows.append(("get_updates backlog", n / t, "bare SELECT", n / anchor))

        plain = backlog("rw", False)
        target = replica("rw", "b" * 32)
        target.attach("source", peer_read_only=False)
        t = best_time(lambda: [target.receive("source", m) for m in plain])
        anchor = best_time(lambda: bare_insert(base / "bare2.sqlite3", bodies, sync, pages))
        rows.append(("receive (read-write)", n / t, "bare INSERT+COMMIT", n / anchor))

        target2 = replica("rw2", "e" * 32)
        target2.attach("source", peer_read_only=False)

        def receive_batched() -> None:
            for start in range(0, n, BATCH):
                with target2.batch():
                    for m in plain[start:start + BATCH]:
                        target2.receive("source", m)

        t = best_time(receive_batched)
        anchor = best_time(lambda: bare_insert(base / "bare5.sqlite3", bodies, sync, pages,
                                           batch=BATCH))
        rows.append((f"receive, batch({BATCH})", n / t, f"bare INSERT, COMMIT/{BATCH}",
                     n / anchor))

        signed = backlog("ro", True)
        reader = replica("ro", "c" * 32, read_only=True)
        reader.attach("source", peer_read_only=False)
        t = best_time(lambda: [reader.receive("source", m) for m in signed])
        sigs = [m.signature or b"" for m in signed]
        raws = [m.raw for m in signed]
        anchor = best_time(lambda: bare_insert(base / "bare3.sqlite3", raws, sync, pages,
                                           verify, sigs))
        rows.append(("receive (read-only, signed)", n / t, "INSERT+COMMIT+verify", n / anchor))

    print(f"board {args.board}: synchronous={sync}, checkpoint every {pages} pages; {n} records")
    print(f"{'operation':30} {'ours/s':>10}   {'anchor':24} {'anchor/s':>10} {'ratio':>6}")
    for name, ours, anchor_name, theirs in rows:
        print(f"{name:30} {ours:10.0f}   {anchor_name:24} {theirs:10.0f} {ours / theirs:6.2f}")


if __name__ == "__main__":
    main()
