"""Benchmark: two csembed peers syncing over encrypted loopback TCP, beside ``rsync -a``.

Usage::

    python tools/bench/sync.py [--quick] [--board desktop] [--gzip]

Three cases, each run with the two peers as separate processes (so each
gets its own core and its own peak RSS is measured), and each beside
``rsync -a`` copying the same tree between two local folders in the same run
(the anchor: no network, no encryption, no database, no fsync):

(a) 1 GiB in 200 files -- MB/s
(b) 10,000 files of 4 KiB -- files/s
(c) rescan of the 10,000 unchanged files -- seconds (scan work of one pass)

The clock starts when the receiving peer connects (the sender has already
scanned its tree) and stops when the receiver reports every file in place
and verified. ``--quick`` runs a tenth of each case.

``python tools/bench/sync.py peer ...`` runs one peer (used by the benchmark
and by ``tests/test_sync_tcp.py``): it opens or creates a share, listens or
connects, syncs, and prints JSON lines (``listening``, ``done``) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SHARE_SEED = 4242


def share_keys():
    from csembed.security.keys import ShareKeys
    return ShareKeys.generate(random.Random(SHARE_SEED).randbytes)


def peer_id_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


# -- one peer (a subprocess) --------------------------------------------------------------


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


async def run_peer(args: argparse.Namespace) -> None:
    import nacl.signing

    from csembed.board_profile import load_board
    from csembed.database import Replica, Store, ed25519_signer, ed25519_verifier
    from csembed.directory.engine import ShareEngine
    from csembed.directory.local_share import open_local_share
    from csembed.protocol.core import CredentialRegistry, Grant
    from csembed.runtime.peer_link import connect_link, core_config, link_handler
    from csembed.runtime.rate_limit import RateLimiter
    from csembed.runtime.session_stream import serve
    from csembed.runtime.share_runtime import ShareRuntime
    from csembed.security.keys import READ_WRITE

    board = load_board(args.board)
    storage = dataclasses.replace(board.storage, free_space_reserve=0,
                                  write_policy=args.write_policy or board.storage.write_policy)
    cpu = dataclasses.replace(board.cpu, gzip_level=args.gzip)
    board = dataclasses.replace(board, storage=storage, cpu=cpu)
    keys = share_keys()
    seed = keys.level(READ_WRITE).signing_key
    assert seed is not None
    state = Path(args.state)
    create = not (state / "local.sqlite").exists()
    local = open_local_share(args.root, state, board, create=create,
                             rng=random.Random(args.name), settle=0.0)
    me = peer_id_of(args.name)
    store = Store(state / "records.sqlite3", peer_id=me,
                  synchronous=board.storage.db_synchronous)
    replica = Replica(store, read_only=False,
                      verify=ed25519_verifier(bytes(nacl.signing.SigningKey(seed).verify_key)),
                      sign=ed25519_signer(seed), rng=os.urandom)
    engine = ShareEngine(local, replica, board, random.Random(args.name))
    runtime = ShareRuntime(engine, scan_budget=1.0)
    loop_task = asyncio.create_task(runtime.run())
    await runtime.wait_until(lambda e: e.last_scan is not None, None)
    emit(event="scanned", seconds=runtime.scan_wall_seconds, work=runtime.scan_work_seconds,
         files=engine.last_scan.listed if engine.last_scan else 0)
    upload = RateLimiter(args.upload_rate) if args.upload_rate else None
    config = core_config(board)
    if args.listen:
        registry = CredentialRegistry()
        registry.add_share(keys, me)
        server = await serve("127.0.0.1", 0, registry,
                             link_handler(lambda ready: runtime, upload=upload), config)
        emit(event="listening", port=server.sockets[0].getsockname()[1])
    else:
        link = await connect_link("127.0.0.1", args.connect,
                                  Grant.share_key(keys, READ_WRITE, me), config,
                                  resolve=lambda ready: runtime, upload=upload)
        started = time.monotonic()
        link_task = asyncio.create_task(link.run())

    def done(e) -> bool:
        return (e.stats()["files_fetched"] + e.stats()["files_copied"] >= args.until_files
                and e.status()["state"] == "idle")

    if args.until_files:
        await runtime.wait_until(done, None)
        seconds = time.monotonic() - started
        emit(event="done", seconds=seconds, stats=engine.stats(),
             rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        if args.rescan:
            runtime.request_scan()
            scans = engine.stats()["scans"]
            await runtime.wait_until(lambda e: e.stats()["scans"] > scans, None)
            emit(event="rescanned", seconds=runtime.scan_wall_seconds,
                 work=runtime.scan_work_seconds,
                 rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        link_task.cancel()
        runtime.stop()
        return
    # a serving peer runs until its stdin closes
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    emit(event="exit", rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
         stats=engine.stats())
    runtime.stop()
    await asyncio.wait_for(loop_task, 5)


def peer_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="sync.py peer")
    parser.add_argument("--root", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--board", default="desktop")
    parser.add_argument("--gzip", type=int, default=0)
    parser.add_argument("--listen", action="store_true")
    parser.add_argument("--connect", type=int, default=0)
    parser.add_argument("--upload-rate", type=float, default=0.0)
    parser.add_argument("--until-files", type=int, default=0)
    parser.add_argument("--rescan", action="store_true")
    parser.add_argument("--write-policy", default=None)
    parser.add_argument("--no-fsync", action="store_true", help="diagnostics only")
    args = parser.parse_args(argv)
    if args.no_fsync:
        from csembed.directory import disk_sync
        os.fsync = lambda fd: None
        disk_sync._syncfs = lambda fd: 0  # batched data syncs go through syncfs(2)
    asyncio.run(run_peer(args))


# -- the benchmark ------------------------------------------------------------------------


def make_tree(root: Path, files: int, size: int) -> None:
    rng = random.Random(files * 7 + size)
    for i in range(files):
        path = root / f"d{i % 50:02d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            left = size
            while left:
                n = min(left, 1 << 20)
                fh.write(rng.randbytes(n))
                left -= n
    os.sync()


def spawn_peer(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "peer", *args], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True)


def read_event(proc: subprocess.Popen, name: str) -> dict:
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == name:
            return event
    raise RuntimeError(f"peer exited before {name!r}")


def run_case(work: Path, label: str, files: int, size: int, board: str, gzip: int,
             rescan: bool = False, extra: tuple[str, ...] = ()) -> dict:
    src, dst = work / f"{label}-a", work / f"{label}-b"
    src.mkdir()
    dst.mkdir()
    make_tree(src, files, size)
    sender = spawn_peer("--root", str(src), "--state", str(work / f"{label}-a-state"),
                        "--name", f"{label}-a", "--listen", "--board", board,
                        "--gzip", str(gzip), *extra)
    read_event(sender, "scanned")
    port = read_event(sender, "listening")["port"]
    receiver = spawn_peer("--root", str(dst), "--state", str(work / f"{label}-b-state"),
                          "--name", f"{label}-b", "--connect", str(port), "--board", board,
                          "--gzip", str(gzip), "--until-files", str(files),
                          *(["--rescan"] if rescan else []), *extra)
    done = read_event(receiver, "done")
    result = {"seconds": done["seconds"], "receiver_rss_kb": done["rss_kb"]}
    if rescan:
        again = read_event(receiver, "rescanned")
        result["rescan_seconds"] = again["work"]
        result["rescan_wall"] = again["seconds"]
    receiver.wait(60)
    assert sender.stdin is not None
    sender.stdin.close()
    result["sender_rss_kb"] = read_event(sender, "exit")["rss_kb"]
    sender.wait(60)
    anchor_dst = work / f"{label}-rsync"
    t0 = time.monotonic()
    subprocess.run(["rsync", "-a", f"{src}/", f"{anchor_dst}/"], check=True)
    result["rsync_seconds"] = time.monotonic() - t0
    if rescan:
        t0 = time.monotonic()
        subprocess.run(["rsync", "-a", f"{src}/", f"{anchor_dst}/"], check=True)
        result["rsync_rescan_seconds"] = time.monotonic() - t0
    for path in (src, dst, anchor_dst):
        shutil.rmtree(path)
    return result


def bench_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="sync.py")
    parser.add_argument("--quick", action="store_true", help="a tenth of each case")
    parser.add_argument("--board", default="desktop")
    parser.add_argument("--gzip", type=int, default=0,
                        help="gzip level to negotiate (0 = off; the board's level otherwise)")
    parser.add_argument("--dir", default=None, help="work folder (default: a temp folder)")
    parser.add_argument("--no-fsync", action="store_true",
                        help="diagnostics: peers skip fsync (shows the CPU-bound ceiling)")
    args = parser.parse_args(argv)
    extra = ("--no-fsync",) if args.no_fsync else ()
    if shutil.which("rsync") is None:
        sys.exit("rsync is not installed (apt-get install rsync): it is the anchor")
    scale = 10 if args.quick else 1
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        big = run_case(work, "a", 200 // scale, (1 << 30) // 200, args.board, args.gzip,
                       extra=extra)
        total = (200 // scale) * ((1 << 30) // 200)
        small = run_case(work, "b", 10_000 // scale, 4096, args.board, args.gzip, rescan=True,
                         extra=extra)
    count = 10_000 // scale
    rows = [
        ("(a) 1 GiB / 200 files", f"{total / big['seconds'] / 1e6:.0f} MB/s",
         f"{total / big['rsync_seconds'] / 1e6:.0f} MB/s", ">= 100 MB/s",
         big["sender_rss_kb"], big["receiver_rss_kb"]),
        ("(b) 10,000 x 4 KiB", f"{count / small['seconds']:.0f} files/s",
         f"{count / small['rsync_seconds']:.0f} files/s", ">= 500 files/s",
         small["sender_rss_kb"], small["receiver_rss_kb"]),
        ("(c) rescan 10,000", f"{small['rescan_seconds']:.2f} s",
         f"{small['rsync_rescan_seconds']:.2f} s", "< 1 s", "", ""),
    ]
    print(f"board {args.board}, gzip {args.gzip or 'off'}, encrypted loopback, "
          f"{'quick' if args.quick else 'full'} run"
          + (", NO FSYNC (diagnostic)" if args.no_fsync else ""))
    print(f"{'case':24} {'csembed':>14} {'rsync -a':>14} {'target':>15} "
          f"{'RSS sender':>11} {'RSS recv':>9}")
    for name, ours, anchor, target, rss_a, rss_b in rows:
        rss_a = f"{rss_a / 1024:.0f} MB" if rss_a else ""
        rss_b = f"{rss_b / 1024:.0f} MB" if rss_b else ""
        print(f"{name:24} {ours:>14} {anchor:>14} {target:>15} {rss_a:>11} {rss_b:>9}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "peer":
        peer_main(sys.argv[2:])
    else:
        bench_main(sys.argv[1:])
