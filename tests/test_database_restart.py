"""Restart safety: a replica process killed with SIGKILL at random points.

The child process owns a real SQLite file and acknowledges each change on
stdout only after the call that made it returned (its transaction committed).
The parent feeds work through a pipe, keeps a few changes in flight so the
kill usually lands mid-change, and synchronises on those readiness lines --
never on sleeps. After the kill the parent reopens the file and checks that the
store is consistent, holds every acknowledged change, and picks up
``get_updates`` exactly where the child stopped.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import nacl.signing
import pytest

from csembed.database import Replica, Store, UpdateRejected, ed25519_signer, ed25519_verifier
from csembed.protocol.wire import Message, encode_body, parse_body

SEED = bytes(range(32))
SIGN = ed25519_signer(SEED)
VERIFY = ed25519_verifier(bytes(nacl.signing.SigningKey(SEED).verify_key))
CHILD_PEER = "c" * 32
SOURCE_PEER = "5" * 32
IN_FLIGHT = 4

CHILD = r"""
import random, sys
import nacl.signing
from csembed.database import Replica, Store, UpdateRejected, ed25519_signer, ed25519_verifier
from csembed.protocol.wire import Message, parse_body

mode, path, synchronous = sys.argv[1:4]
seed = bytes(range(32))
replica = Replica(
    Store(path, peer_id="c" * 32, synchronous=synchronous, checkpoint_pages=100),
    read_only=False,
    verify=ed25519_verifier(bytes(nacl.signing.SigningKey(seed).verify_key)),
    sign=ed25519_signer(seed),
    rng=random.Random(path).randbytes,
)
replica.attach("source", peer_read_only=False)
out = sys.stdout
out.write("ready\n")
out.flush()
for line in sys.stdin.buffer:
    if mode == "write":
        key, value, now = line.split()
        rev = replica.local_put(key.decode(), int(value), int(now)).record.last_updated_rev
        out.write(f"ok {rev}\n")
    else:
        replica.receive("source", Message(body=parse_body(line), raw=line))
        out.write("ok\n")
    out.flush()
"""


def spawn(mode: str, path: Path, synchronous: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")]
    )
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(path), synchronous],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    return child


def drive_and_kill(
    child: subprocess.Popen[bytes], lines: list[bytes], kill_after: int
) -> list[bytes]:
    """Feed lines keeping IN_FLIGHT unacknowledged; SIGKILL after ``kill_after`` acks."""
    assert child.stdin is not None and child.stdout is not None
    acks: list[bytes] = []
    sent = 0
    while len(acks) < kill_after:
        while sent < len(lines) and sent - len(acks) < IN_FLIGHT:
            child.stdin.write(lines[sent])
            sent += 1
        child.stdin.flush()
        acks.append(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert all(a.startswith(b"ok") for a in acks)
    return acks


def open_child_store(path: Path) -> Replica:
    return Replica(Store(path, peer_id=CHILD_PEER), read_only=False, verify=VERIFY, sign=SIGN,
                   rng=random.Random(1).randbytes)


@pytest.mark.parametrize(("synchronous", "seed"),
                         [("normal", 1), ("normal", 2), ("off", 3), ("full", 4)])
def test_local_writes_survive_sigkill(tmp_path, synchronous, seed):
    rnd = random.Random(seed)
    path = tmp_path / "share.sqlite3"
    commands = [(f"k{rnd.randrange(20)}", i, 1000 + i) for i in range(1, 301)]
    lines = [f"{k} {v} {t}\n".encode() for k, v, t in commands]
    child = spawn("write", path, synchronous)
    acks = drive_and_kill(child, lines, rnd.randrange(5, 250))
    acked = len(acks)
    assert [int(a.split()[1]) for a in acks] == list(range(1, acked + 1))

    replica = open_child_store(path)
    assert replica.store.check() == []
    # Writes are committed in order: everything acknowledged, maybe a little more.
    committed = replica.revision
    assert acked <= committed <= acked + IN_FLIGHT
    assert replica.since() == {CHILD_PEER: committed}
    for key in {k for k, _, _ in commands}:
        writes = [(v, i) for i, (k, v, _) in enumerate(commands, start=1)
                  if k == key and i <= committed]
        got = replica.get(key)
        if not writes:
            assert got is None
        else:
            assert (got.value, got.last_updated_rev) == writes[-1]
    # It carries on without reusing a revision.
    assert replica.local_put("after", 1, 99999).record.last_updated_rev == committed + 1


def source_with_history(rnd: random.Random) -> tuple[Replica, list[bytes]]:
    source = Replica(Store(":memory:", peer_id=SOURCE_PEER), read_only=False, verify=VERIFY,
                     sign=SIGN, rng=rnd.randbytes)
    now = 0
    for _ in range(400):
        now += 1
        key = f"k{rnd.randrange(40)}"
        roll = rnd.random()
        try:
            if roll < 0.7:
                source.local_put(key, {"n": now}, now)
            elif roll < 0.85:
                source.local_delete(key, now)
            else:
                source.local_rename(key, f"k{rnd.randrange(40)}", now)
        except Exception:  # missing key or taken name: skip, as an application would
            continue
    return source, stream(source, {})


def stream(source: Replica, since: dict[str, int]) -> list[bytes]:
    source.detach("child")
    source.attach("child", peer_read_only=False)
    body = encode_body({"type": "database.get_updates", "since": since})
    out = source.receive("child", Message(body=parse_body(body), raw=body))
    while source.has_pending("child"):
        out += source.pull("child")
    return [o.raw for o in out]


@pytest.mark.parametrize(("synchronous", "seed"), [("normal", 5), ("normal", 6), ("off", 7)])
def test_receiving_replica_resumes_get_updates_after_sigkill(tmp_path, synchronous, seed):
    rnd = random.Random(seed)
    source, lines = source_with_history(rnd)
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    path = tmp_path / "share.sqlite3"
    child = spawn("receive", path, synchronous)
    drive_and_kill(child, lines, rnd.randrange(5, len(lines) - 5))

    replica = open_child_store(path)
    assert replica.store.check() == []
    had = {v.dot for v in replica.store.iter_versions()}
    since = replica.since()
    rest = stream(source, since)
    # Only what the child had not stored comes again.
    resent = {(parse_body(r)["last_updated_by"], parse_body(r)["last_updated_rev"])
              for r in rest}
    assert not resent & had
    assert len(rest) + len(had) == len(lines)
    replica.attach("source", peer_read_only=False)
    for raw in rest:
        replica.receive("source", Message(body=parse_body(raw), raw=raw))
    applied = replica.take_events()
    assert applied and not any(isinstance(e, UpdateRejected) for e in applied)
    assert sorted((v.dot, v.raw) for v in replica.store.iter_versions()) == sorted(
        (v.dot, v.raw) for v in source.store.iter_versions())
    assert replica.since() == source.since()
