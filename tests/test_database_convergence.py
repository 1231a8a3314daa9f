"""Convergence of several replicas under random writes, partitions and delivery orders.

The oracle is independent of the replica code: from the log of every write
made on a read-write peer it computes, per record, the writes that no other
write descends from (the maximal elements under the vector-clock order). After
all links heal and the network is quiet, every replica -- read-only ones
included -- must hold exactly those versions: nothing lost (every write is
held or superseded by a causally later one) and nothing resurrected. The
winner every read-write replica shows must be the default resolver's pick
among them.
"""

from __future__ import annotations

import random
from collections import defaultdict

import nacl.signing
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from csembed.database import Record, Replica, Store, ed25519_signer, ed25519_verifier
from csembed.database.errors import LocalWriteError
from csembed.database.memnet import MemoryNetwork

SEED = bytes(range(32))
VERIFY = ed25519_verifier(bytes(nacl.signing.SigningKey(SEED).verify_key))
SIGN = ed25519_signer(SEED)

READ_WRITE = ["a", "b", "c"]
READ_ONLY = ["r", "s"]
PEERS = READ_WRITE + READ_ONLY
KEYS = ["k0", "k1", "k2"]


def peer_id(name: str) -> str:
    return (name.encode() * 16)[:16].hex()


def make_network(wire: bool, rng: random.Random) -> MemoryNetwork:
    net = MemoryNetwork(wire=wire)
    for name in PEERS:
        read_only = name in READ_ONLY
        store = Store(":memory:", peer_id=peer_id(name))
        net.add(
            name,
            Replica(
                store,
                read_only=read_only,
                verify=VERIFY,
                sign=None if read_only else SIGN,
                rng=rng.randbytes,
            ),
        )
    return net


def maximal(writes: list[Record]) -> set[tuple[str, int]]:
    return {
        w.dot
        for w in writes
        if not any(w.vector_clock < o.vector_clock for o in writes)
    }


def rank(record: Record) -> tuple[int, str, int, str]:
    return (record.update_time, record.last_updated_by, record.last_updated_rev, record.uuid)


pairs = st.sampled_from([(a, b) for a in PEERS for b in PEERS if a != b])
_ACTIONS = {
    "put": st.tuples(st.just("put"), st.sampled_from(PEERS), st.sampled_from(KEYS),
                     st.integers(0, 9)),
    "delete": st.tuples(st.just("delete"), st.sampled_from(PEERS), st.sampled_from(KEYS)),
    "rename": st.tuples(st.just("rename"), st.sampled_from(PEERS), st.sampled_from(KEYS),
                        st.sampled_from(KEYS)),
    "link": st.tuples(st.just("link"), pairs),
    "deliver": st.tuples(st.just("deliver"), pairs, st.integers(1, 5)),
    "flush": st.tuples(st.just("flush"), pairs),
    "batch": st.tuples(st.just("batch"), pairs, st.integers(1, 8)),
    "pause": st.tuples(st.just("pause"), pairs),
}
# Weighted so that writes and deliveries dominate, which is what makes
# concurrent versions of one record likely.
_WEIGHTS = ["put"] * 8 + ["deliver"] * 5 + ["flush"] * 3 + ["batch"] * 2 + [
    "delete", "rename", "rename", "link", "link", "pause"]
actions = st.sampled_from(_WEIGHTS).flatmap(lambda kind: _ACTIONS[kind])


def run(script: list[tuple], skews: list[int], wire: bool, seed: int) -> None:
    rng = random.Random(seed)
    net = make_network(wire, rng)
    writes: list[Record] = []
    paused: set[tuple[str, str]] = set()
    skew = dict(zip(PEERS, skews, strict=True))
    net.connect_all()

    for step, action in enumerate(script, start=1):
        kind = action[0]
        if kind in ("put", "delete", "rename"):
            name = action[1]
            replica = net.replicas[name]
            now = step * 1000 + skew[name]
            held = {
                r.uuid: replica.versions(r.uuid)
                for r in (replica.get(action[2]),)
                if r is not None
            }
            try:
                if kind == "put":
                    written = replica.local_put(action[2], {"n": action[3], "by": name}, now)
                elif kind == "delete":
                    written = replica.local_delete(action[2], now)
                else:
                    written = replica.local_rename(action[2], action[3], now)
            except LocalWriteError:
                continue
            # The new clock descends from every version the writer held.
            for version in held.get(written.record.uuid, []):
                assert version.vector_clock < written.record.vector_clock
            if name in READ_WRITE:
                writes.append(written.record)
            net.route(name, written.outgoing)
        elif kind == "link":
            a, b = action[1]
            if net.connected(a, b):
                net.disconnect(a, b)
                paused.discard((a, b))
                paused.discard((b, a))
            else:
                net.connect(a, b)
        elif kind == "deliver":
            a, b = action[1]
            for _ in range(action[2]):
                if not net.deliver(a, b):
                    break
        elif kind == "batch":
            # The receiver applies several messages in one transaction.
            a, b = action[1]
            with net.replicas[b].batch() as batch:
                for _ in range(action[2]):
                    if not net.deliver(a, b):
                        break
            net.route(b, batch.outgoing)
        elif kind == "flush":
            a, b = action[1]
            while net.deliver(a, b):
                pass
        elif kind == "pause":
            a, b = action[1]
            if net.connected(a, b):
                if (a, b) in paused:
                    paused.discard((a, b))
                    net.route(a, net.replicas[a].resume(b))
                else:
                    paused.add((a, b))
                    net.replicas[a].pause(b)
        for replica in net.replicas.values():
            replica.take_events()

    # Heal: a ring is enough for everything to reach everyone.
    for a, b in sorted(paused):
        if net.connected(a, b):
            net.route(a, net.replicas[a].resume(b))
    for a, b in zip(PEERS, PEERS[1:] + PEERS[:1], strict=True):
        net.connect(a, b)
    net.settle()

    by_uuid: dict[str, list[Record]] = defaultdict(list)
    for w in writes:
        by_uuid[w.uuid].append(w)
    expected = set().union(*(maximal(ws) for ws in by_uuid.values())) if by_uuid else set()
    expected_winner = {}
    for uuid, ws in by_uuid.items():
        top = [w for w in ws if w.dot in expected]
        expected_winner[uuid] = max(top, key=rank).dot

    siblings = sum(len(maximal(ws)) > 1 for ws in by_uuid.values())
    if currently_in_test_context():
        target(float(siblings), label="records with concurrent versions")
    views = {}
    for name, replica in net.replicas.items():
        assert replica.store.check() == [], name
        stored = {v.dot for v in replica.store.iter_versions(include_local=False)}
        assert stored == expected, (name, stored ^ expected)
        local = [v for v in replica.store.iter_versions() if v.local_only]
        assert all(v.last_updated_by == peer_id(name) for v in local)
        winners = {
            r.uuid: r.dot for r in replica.records(include_deleted=True) if not r.local_only
        }
        local_uuids = {v.uuid for v in local}
        for uuid, dot in expected_winner.items():
            if uuid not in local_uuids:
                assert winners.get(uuid) == dot, (name, uuid)
        if name in READ_WRITE:
            views[name] = {key: getattr(replica.get(key), "dot", None) for key in KEYS}
    assert len({tuple(sorted(v.items())) for v in views.values()}) == 1, views


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    script=st.lists(actions, min_size=20, max_size=80),
    skews=st.lists(st.integers(-2500, 2500), min_size=len(PEERS), max_size=len(PEERS)),
    seed=st.integers(0, 2**32),
)
def test_replicas_converge_without_lost_writes(script, skews, seed):
    run(script, skews, wire=False, seed=seed)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=st.lists(actions, min_size=20, max_size=40),
    skews=st.lists(st.integers(-2500, 2500), min_size=len(PEERS), max_size=len(PEERS)),
    seed=st.integers(0, 2**32),
)
def test_replicas_converge_over_the_wire_format(script, skews, seed):
    run(script, skews, wire=True, seed=seed)


def test_busy_partitioned_scenario_converges():
    """A long deterministic run: many writes in three partitions, then heal."""
    rnd = random.Random(7)
    script: list[tuple] = []
    for _ in range(400):
        roll = rnd.random()
        if roll < 0.45:
            script.append(("put", rnd.choice(PEERS), rnd.choice(KEYS), rnd.randrange(10)))
        elif roll < 0.55:
            script.append(("delete", rnd.choice(PEERS), rnd.choice(KEYS)))
        elif roll < 0.65:
            script.append(("rename", rnd.choice(PEERS), rnd.choice(KEYS), rnd.choice(KEYS)))
        elif roll < 0.75:
            a, b = rnd.sample(PEERS, 2)
            script.append(("link", (a, b)))
        else:
            a, b = rnd.sample(PEERS, 2)
            script.append(("deliver", (a, b), rnd.randrange(1, 6)))
    run(script, [0, 300, -300, 0, 0], wire=False, seed=1)
