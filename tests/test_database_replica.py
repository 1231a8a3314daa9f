"""Replica behaviour: get_updates, relay, conflicts, renames, deletion, access levels."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import nacl.signing
import pytest

from csembed.database import (
    Conflict,
    ConflictKind,
    Limits,
    LocalWriteError,
    RecordChanged,
    Replica,
    Resolution,
    Store,
    UpdateRejected,
    VectorClock,
    ed25519_signer,
    ed25519_verifier,
)
from csembed.database.memnet import MemoryNetwork
from csembed.protocol.wire import Message, encode_body, parse_body

RW_SEED = bytes(range(32))
SIGN = ed25519_signer(RW_SEED)
VERIFY = ed25519_verifier(bytes(nacl.signing.SigningKey(RW_SEED).verify_key))
FORGER = ed25519_signer(bytes(32 * [7]))


def pid(name: str) -> str:
    return (name.encode() * 16)[:16].hex()


def replica(name: str, *, read_only: bool = False, path: str | Path = ":memory:",
            seed: int = 0, **kwargs) -> Replica:
    store = Store(path, peer_id=pid(name))
    return Replica(
        store,
        read_only=read_only,
        verify=VERIFY,
        sign=None if read_only else SIGN,
        rng=random.Random(f"{name}{seed}").randbytes,
        **kwargs,
    )


def network(*names: str, read_only: tuple[str, ...] = (), wire: bool = False) -> MemoryNetwork:
    net = MemoryNetwork(wire=wire)
    for name in names:
        net.add(name, replica(name, read_only=name in read_only))
    return net


def put(net: MemoryNetwork, name: str, key: str, value, now: int):
    written = net.replicas[name].local_put(key, value, now)
    net.route(name, written.outgoing)
    return written.record


def events(net: MemoryNetwork, name: str, kind=None):
    got = net.replicas[name].take_events()
    return [e for e in got if kind is None or isinstance(e, kind)]


def update_body(**overrides):
    body = {
        "type": "database.update",
        "key": "photo-1234",
        "value": {"camera": "NIKON"},
        "uuid": "9223bf8014507dca629123485dc3a207",
        "last_updated_by": "b934d9de020109fde790cd39acce73fc",
        "last_updated_rev": 15,
        "update_time": "2014-02-23T23:45:39Z",
        "vector_clock": {
            "b934d9de020109fde790cd39acce73fc": 15,
            "d38a0af145c48b75289e72985e3cc50a": 35,
        },
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def message(body, signature=None) -> Message:
    raw = encode_body(body)
    return Message(body=parse_body(raw), raw=raw, signature=signature)


# -- get_updates -------------------------------------------------------------


def test_get_updates_sends_missing_versions_in_revision_order_including_unnamed_peers():
    net = network("a", "b", "c")
    for i in range(3):
        put(net, "a", f"a{i}", i, 10 + i)
    put(net, "b", "b0", 0, 20)
    net.connect("a", "b")
    net.settle()
    source = net.replicas["b"]
    assert source.since() == {pid("a"): 3, pid("b"): 1}

    source.attach("x", peer_read_only=False)
    # The requester knows a's first write and has never heard of b.
    request = message({"type": "database.get_updates", "since": {pid("a"): 1}})
    out = source.receive("x", request)
    got = [(m.message().body["last_updated_by"], m.message().body["last_updated_rev"])
           for m in out]
    assert got == [(pid("b"), 1), (pid("a"), 2), (pid("a"), 3)]
    assert all(m.conn_id == "x" for m in out)

    # Subscribed now: a later write reaches x live.
    out = source.local_put("b1", 1, 30).outgoing
    assert sorted((m.conn_id, m.message().body["key"]) for m in out) == [("a", "b1"), ("x", "b1")]


def test_no_live_updates_before_get_updates():
    a = replica("a")
    a.attach("x", peer_read_only=False)
    assert a.local_put("k", 1, 5).outgoing == ()
    assert not a.has_pending("x")


def test_attach_requests_updates_with_the_since_map():
    a = replica("a")
    a.local_put("k", 1, 5)
    (out,) = a.attach("x", peer_read_only=False)
    assert out.message().body == {"type": "database.get_updates", "since": {pid("a"): 1}}


def test_relayed_to_every_other_peer_but_not_back_to_the_sender():
    net = network("a", "b", "c", "d")
    for other in "acd":
        net.connect("b", other)
    net.settle()
    put(net, "a", "k", 1, 5)
    assert net.deliver("a", "b")
    queued = {pair: len(q) for pair, q in net.queues.items() if q}
    assert queued == {("b", "c"): 1, ("b", "d"): 1}
    net.settle()
    assert not net.replicas["a"].has_pending("b")
    assert not net.replicas["b"].has_pending("a")


def test_relayed_bytes_are_the_original_bytes_and_unknown_fields_survive():
    net = network("a", "b", "c")
    net.connect("a", "b")
    net.connect("b", "c")
    net.settle()
    body = update_body(last_updated_by=pid("a"), vector_clock={pid("a"): 15},
                       future_field={"nested": [1, 2, 3]})
    original = message(body)
    net.route("b", net.replicas["b"].receive("a", original))
    (out,) = list(net.queues[("b", "c")])
    assert out.raw == original.raw
    net.settle()
    stored = net.replicas["c"].get("photo-1234")
    assert stored is not None and stored.raw == original.raw
    assert b'"future_field"' in stored.raw


def test_batches_pull_and_pause():
    a = replica("a", limits=Limits(batch=16))
    for i in range(50):
        a.local_put(f"k{i:02d}", i, i + 1)
    a.attach("x", peer_read_only=False)
    first = a.receive("x", message({"type": "database.get_updates", "since": {}}))
    assert len(first) == 16
    revs = [m.message().body["last_updated_rev"] for m in first]
    while a.has_pending("x"):
        more = a.pull("x")
        revs += [m.message().body["last_updated_rev"] for m in more]
    assert revs == list(range(1, 51))

    a.pause("x")
    assert a.local_put("later", 1, 100).outgoing == ()
    assert a.has_pending("x")
    resumed = a.resume("x")
    assert [m.message().body["key"] for m in resumed] == ["later"]


def test_duplicate_delivery_is_ignored_and_not_relayed():
    net = network("a", "b", "c")
    net.connect("a", "b")
    net.connect("b", "c")
    net.settle()
    put(net, "a", "k", 1, 5)
    (out,) = list(net.queues[("a", "b")])
    net.settle()
    events(net, "b")
    assert net.replicas["b"].receive("a", out.message()) == []
    assert events(net, "b") == []


def test_same_write_via_two_paths_is_not_a_conflict():
    # The draft's tick-on-relay rule would give the two copies different
    # clocks; here a relayed copy is the original, so nothing conflicts.
    net = network("a", "b", "c")
    net.connect_all()
    net.settle()
    put(net, "a", "k", 1, 5)
    net.settle()
    for name in "bc":
        assert events(net, name, Conflict) == []
        (version,) = net.replicas[name].versions(net.replicas["a"].get("k").uuid)
        assert version.vector_clock == VectorClock({pid("a"): 1})


def test_own_write_coming_back_after_restore_raises_the_counter():
    a = replica("a")
    a.local_put("k", 1, 5)
    a.local_put("k", 2, 6)
    fresh = replica("a", seed=1)
    fresh.attach("old", peer_read_only=False)
    a.attach("new", peer_read_only=False)
    for out in a.receive("new", message({"type": "database.get_updates", "since": {}})):
        fresh.receive("old", out.message())
    assert fresh.revision == 2
    assert fresh.local_put("k", 3, 7).record.last_updated_rev == 3


# -- conflicts -----------------------------------------------------------------


def test_concurrent_edits_keep_both_versions_and_pick_the_later_one_everywhere():
    net = network("a", "b", "c")
    net.connect_all()
    first = put(net, "a", "doc", "v1", 1000)
    net.settle()
    for name in "abc":
        events(net, name)
    net.disconnect("a", "b")
    net.disconnect("a", "c")
    put(net, "a", "doc", "from a", 2000)
    later = put(net, "b", "doc", "from b", 3000)
    net.settle()
    net.connect_all()
    net.settle()
    for name in "abc":
        r = net.replicas[name]
        assert r.get("doc").dot == later.dot
        assert {v.value for v in r.versions(first.uuid)} == {"from a", "from b"}
    (conflict,) = events(net, "a", Conflict)
    assert conflict.kind is ConflictKind.CONCURRENT
    assert conflict.winner.value == "from b" and conflict.loser.value == "from a"

    # A write after the conflict joins both clocks and resolves it everywhere.
    resolved = put(net, "a", "doc", "merged", 4000)
    assert resolved.vector_clock == VectorClock({pid("a"): 3, pid("b"): 1})
    net.settle()
    for name in "abc":
        assert [v.value for v in net.replicas[name].versions(first.uuid)] == ["merged"]


def test_update_time_ties_are_broken_by_peer_id():
    net = network("a", "b")
    net.connect("a", "b")
    put(net, "a", "doc", 0, 1000)
    net.settle()
    net.disconnect("a", "b")
    put(net, "a", "doc", "a", 2000)
    put(net, "b", "doc", "b", 2000)
    net.connect("a", "b")
    net.settle()
    expected = "b" if pid("b") > pid("a") else "a"
    assert net.replicas["a"].get("doc").value == expected
    assert net.replicas["b"].get("doc").value == expected


def test_custom_resolver_decides_and_loser_is_handed_over():
    def largest_value(current, incoming):
        if incoming.value > current.value:
            return Resolution(incoming, current)
        return Resolution(current, incoming)

    net = MemoryNetwork()
    for name in "ab":
        net.add(name, replica(name, resolver=largest_value))
    net.connect("a", "b")
    put(net, "a", "n", 0, 1)
    net.settle()
    net.disconnect("a", "b")
    put(net, "a", "n", 50, 10)
    put(net, "b", "n", 7, 20)  # later, but smaller
    events(net, "a")
    net.connect("a", "b")
    net.settle()
    assert net.replicas["a"].get("n").value == 50
    assert net.replicas["b"].get("n").value == 50
    (conflict,) = events(net, "a", Conflict)
    assert conflict.loser.value == 7


def test_order_sensitive_resolver_still_agrees_everywhere():
    # "incoming wins" depends on argument order; folding in dot order, not
    # arrival order, makes every peer pick the same version anyway.
    def incoming_wins(current, incoming):
        return Resolution(incoming, current)

    net = MemoryNetwork()
    for name in "abc":
        net.add(name, replica(name, resolver=incoming_wins))
    net.connect_all()
    put(net, "a", "doc", 0, 1)
    net.settle()
    for name in "abc":
        net.disconnect(*[n for n in "abc" if n != name])
    for name in "abc":
        put(net, name, "doc", name, 100)
    # Different arrival orders: a hears c then b, c hears a then b, b hears c then a.
    for x, y in (("a", "c"), ("a", "b"), ("c", "b")):
        net.connect(x, y)
        net.settle()
        net.disconnect(x, y)
    net.connect_all()
    net.settle()
    shown = {name: net.replicas[name].get("doc").value for name in "abc"}
    assert len(set(shown.values())) == 1, shown


def test_resolver_must_return_its_arguments():
    net = MemoryNetwork()
    for name in "ab":
        net.add(name, replica(name, resolver=lambda c, i: Resolution(c, c)))
    net.connect("a", "b")
    put(net, "a", "n", 0, 1)
    net.settle()
    net.disconnect("a", "b")
    put(net, "a", "n", 1, 2)
    put(net, "b", "n", 2, 3)
    net.connect("a", "b")
    with pytest.raises(TypeError, match="resolver"):
        net.settle()


def test_same_key_created_on_two_peers_is_a_key_conflict():
    net = network("a", "b")
    mine = put(net, "a", "notes.txt", "a's", 1000)
    theirs = put(net, "b", "notes.txt", "b's", 2000)
    assert mine.uuid != theirs.uuid
    net.connect("a", "b")
    net.settle()
    (conflict,) = events(net, "a", Conflict)
    assert conflict.kind is ConflictKind.SAME_KEY
    assert (conflict.winner.uuid, conflict.loser.uuid) == (theirs.uuid, mine.uuid)
    for name in "ab":
        assert net.replicas[name].get("notes.txt").uuid == theirs.uuid
    # The application keeps the loser under another name.
    renamed = net.replicas["a"].local_rename("notes.txt", "notes.CONFLICT.txt", 3000,
                                             uuid=mine.uuid)
    net.route("a", renamed.outgoing)
    net.settle()
    for name in "ab":
        r = net.replicas[name]
        assert r.get("notes.CONFLICT.txt").uuid == mine.uuid
        assert r.get("notes.txt").uuid == theirs.uuid


# -- renames -------------------------------------------------------------------


def test_rename_keeps_uuid_and_value_and_spreads():
    net = network("a", "b")
    net.connect("a", "b")
    original = put(net, "a", "old", {"x": 1}, 1000)
    net.settle()
    written = net.replicas["b"].local_rename("old", "new", 2000)
    net.route("b", written.outgoing)
    net.settle()
    for name in "ab":
        r = net.replicas[name]
        assert r.get("old") is None
        got = r.get("new")
        assert (got.uuid, got.value) == (original.uuid, {"x": 1})


def test_a_peers_rename_is_kept_as_a_departure_until_acted_on(tmp_path):
    net = MemoryNetwork()
    net.add("a", replica("a"))
    net.add("b", replica("b", path=tmp_path / "b.sqlite3"))
    net.connect("a", "b")
    original = put(net, "a", "old", {"x": 1}, 1000)
    net.settle()
    written = net.replicas["a"].local_rename("old", "new", 2000)
    net.route("a", written.outgoing)
    net.settle()
    assert net.replicas["a"].departures() == []  # its own rename: done on its side already
    b = net.replicas["b"]
    assert b.departures() == [(original.uuid, "old")]
    b.store.close()  # a crash before acting: the departure is still there
    b = replica("b", path=tmp_path / "b.sqlite3")
    assert b.departures() == [(original.uuid, "old")]
    b.acted_on(b.departures())
    assert b.departures() == []


def test_rename_onto_a_taken_key_or_missing_key_is_refused():
    a = replica("a")
    a.local_put("x", 1, 1)
    a.local_put("y", 2, 2)
    with pytest.raises(LocalWriteError, match="taken"):
        a.local_rename("x", "y", 3)
    with pytest.raises(LocalWriteError, match="rename"):
        a.local_rename("nope", "z", 3)


def test_concurrent_rename_and_edit_converge():
    net = network("a", "b")
    net.connect("a", "b")
    rec = put(net, "a", "x", 1, 1000)
    net.settle()
    net.disconnect("a", "b")
    net.route("a", net.replicas["a"].local_rename("x", "y", 2000).outgoing)
    put(net, "b", "x", 2, 1500)
    net.connect("a", "b")
    net.settle()
    for name in "ab":
        r = net.replicas[name]
        assert r.get("y").uuid == rec.uuid and r.get("x") is None
    put(net, "b", "y", 3, 5000)
    net.settle()
    assert len(net.replicas["a"].versions(rec.uuid)) == 1


# -- deletion ------------------------------------------------------------------


@pytest.mark.parametrize("b_deletes", ["concurrently", "after A's delete arrived"])
def test_ghost_scenario_cannot_resurrect(tmp_path, b_deletes):
    """database.md's seven steps, with real SQLite files and restarts between steps."""
    paths = {name: tmp_path / f"{name}.sqlite3" for name in "ABC"}

    def up(net, name):
        net.add(name, replica(name, path=paths[name]))

    def down(net, name):
        for other in list(net.replicas):
            net.disconnect(name, other)
        net.replicas.pop(name).store.close()

    net = MemoryNetwork()
    for name in "ABC":
        up(net, name)
    # 1. A, B and C know about a record.
    net.connect_all()
    record = put(net, "A", "photo", {"v": 1}, 1000)
    net.settle()
    assert all(net.replicas[n].get("photo") is not None for n in "ABC")
    # 2. Only A and B are running.
    down(net, "C")
    # 3. The record is deleted on A.  4. B also deletes it.
    net.route("A", net.replicas["A"].local_delete("photo", 2000).outgoing)
    if b_deletes == "concurrently":
        net.route("B", net.replicas["B"].local_delete("photo", 2001).outgoing)
        net.settle()
    else:
        net.settle()
        with pytest.raises(LocalWriteError):
            net.replicas["B"].local_delete("photo", 2001)
    # 5. A disconnects.
    down(net, "A")
    down(net, "B")
    up(net, "B")
    # 6. C connects to B.
    up(net, "C")
    net.connect("B", "C")
    net.settle()
    for name in "BC":
        assert net.replicas[name].get("photo") is None
        assert all(v.deleted for v in net.replicas[name].versions(record.uuid))
    # 7. A reconnects to B.
    up(net, "A")
    net.connect("A", "B")
    net.settle()
    for name in "ABC":
        r = net.replicas[name]
        assert r.get("photo") is None
        assert r.get_uuid(record.uuid).deleted
        assert r.store.check() == []


def test_tombstones_are_kept_and_a_new_record_can_take_the_key():
    a = replica("a")
    old = a.local_put("k", 1, 1).record
    a.local_delete("k", 2)
    new = a.local_put("k", 2, 3).record
    assert new.uuid != old.uuid
    assert a.get_uuid(old.uuid).deleted
    assert a.get("k").uuid == new.uuid


# -- access levels -------------------------------------------------------------


def signed_update(name="a", rev=1, key="k", value="v", sign=SIGN, uuid="9" * 32):
    body = update_body(key=key, value=value, last_updated_by=pid(name), last_updated_rev=rev,
                       vector_clock={pid(name): rev}, uuid=uuid)
    raw = encode_body(body)
    return Message(body=parse_body(raw), raw=raw, signature=sign(raw))


def test_read_write_replica_rejects_forged_or_unsigned_update_from_read_only_peer(caplog):
    a = replica("a")
    a.attach("ro", peer_read_only=True)
    forged = signed_update(sign=FORGER)
    unsigned = message(forged.body)
    bad_signature = Message(body=forged.body, raw=forged.raw, signature=b"\x00" * 10)
    with caplog.at_level(logging.WARNING, logger="csembed.database"):
        for msg in (forged, unsigned, bad_signature):
            assert a.receive("ro", msg) == []
    rejected = a.take_events()
    assert [type(e) for e in rejected] == [UpdateRejected] * 3
    assert "signature" in rejected[0].reason and "signature" in rejected[1].reason
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 3
    assert a.get("k") is None and a.since() == {}

    # A genuine read-write signature relayed by the read-only peer is fine.
    a.receive("ro", signed_update(name="b"))
    assert a.get("k").value == "v"


def test_read_only_replica_rejects_unsigned_updates_even_from_read_write_peers():
    r = replica("r", read_only=True)
    r.attach("rw", peer_read_only=False)
    r.receive("rw", message(signed_update().body))
    (event,) = r.take_events()
    assert isinstance(event, UpdateRejected) and "signature" in event.reason
    assert r.get("k") is None


def test_read_only_peer_relays_signed_records_to_another_read_only_peer():
    net = network("a", "r", "s", read_only=("r", "s"), wire=True)
    net.connect("a", "r")
    net.connect("r", "s")  # s never talks to a read-write peer
    original = put(net, "a", "k", {"x": 1}, 1000)
    net.settle()
    got = net.replicas["s"].get("k")
    assert got is not None and got.value == {"x": 1}
    assert got.raw == original.raw
    assert got.signature is not None and VERIFY(got.raw, got.signature)
    assert [type(e) for e in events(net, "s")] == [RecordChanged]


def test_read_write_replica_signs_once_for_read_only_peers():
    calls = []

    def counting_sign(raw):
        calls.append(raw)
        return SIGN(raw)

    a = Replica(Store(":memory:", peer_id=pid("a")), read_only=False, verify=VERIFY,
                sign=counting_sign, rng=random.Random(1).randbytes)
    a.local_put("k", 1, 1)
    for conn in ("r1", "r2"):
        a.attach(conn, peer_read_only=True)
        (out,) = a.receive(conn, message({"type": "database.get_updates", "since": {}}))
        assert out.signature is not None and VERIFY(out.raw, out.signature)
    a.attach("w", peer_read_only=False)
    (out,) = a.receive("w", message({"type": "database.get_updates", "since": {}}))
    assert out.signature is None
    assert len(calls) == 1


def test_read_only_local_changes_never_leave():
    net = network("a", "r", "s", read_only=("r", "s"))
    net.connect_all()
    put(net, "a", "k", "official", 1000)
    net.settle()
    mine = put(net, "r", "k", "edited on r", 2000)
    put(net, "r", "private", "only on r", 2000)
    assert mine.local_only
    net.settle()
    assert net.replicas["r"].get("k").value == "edited on r"
    for name in "as":
        assert net.replicas[name].get("k").value == "official"
        assert net.replicas[name].get("private") is None
    assert pid("r") not in net.replicas["a"].since()
    # r still relays the signed version its own edit hides.
    net.disconnect("a", "s")
    net.replicas["s"].take_events()
    put(net, "a", "k", "official 2", 3000)
    net.settle()
    assert net.replicas["s"].get("k").value == "official 2"
    # The later signed version wins on r; its local edit is handed over and dropped.
    assert net.replicas["r"].get("k").value == "official 2"
    (conflict,) = events(net, "r", Conflict)
    assert conflict.loser.value == "edited on r"
    assert all(not v.local_only for v in net.replicas["r"].versions(mine.uuid))


def test_read_only_replica_refuses_updates_claiming_its_own_id():
    r = replica("r", read_only=True)
    r.attach("x", peer_read_only=False)
    r.receive("x", signed_update(name="r"))
    (event,) = r.take_events()
    assert isinstance(event, UpdateRejected) and "last_updated_by" in event.reason


def test_configuration_errors():
    with pytest.raises(ValueError, match="read-only"):
        Replica(Store(":memory:", peer_id=pid("x")), read_only=True, verify=VERIFY, sign=SIGN,
                rng=random.Random(0).randbytes)
    unsigned = Replica(Store(":memory:", peer_id=pid("x")), read_only=False, verify=VERIFY,
                       rng=random.Random(0).randbytes)
    with pytest.raises(ValueError, match="sign"):
        unsigned.attach("r", peer_read_only=True)
    unsigned.attach("w", peer_read_only=False)
    with pytest.raises(ValueError, match="already attached"):
        unsigned.attach("w", peer_read_only=False)
    with pytest.raises(ValueError, match="not attached"):
        unsigned.receive("nobody", message({"type": "database.get_updates", "since": {}}))


# -- batches -------------------------------------------------------------------


def test_batch_sends_and_reports_only_after_commit():
    net = network("a", "b")
    net.connect("a", "b")
    net.settle()
    a = net.replicas["a"]
    with a.batch() as batch:
        written = [a.local_put(f"k{i}", i, i + 1) for i in range(5)]
        assert all(w.outgoing == () for w in written)
        assert a.take_events() == [] and a.pull("b") == []
        with pytest.raises(ValueError, match="attach"):
            a.attach("late", peer_read_only=False)
    assert [o.message().body["key"] for o in batch.outgoing] == [f"k{i}" for i in range(5)]
    assert len(a.take_events()) == 5
    net.route("a", batch.outgoing)
    net.settle()
    assert [r.value for r in net.replicas["b"].records()] == list(range(5))


def test_batch_rolls_back_entirely_when_the_block_fails():
    a = replica("a")
    a.local_put("kept", 0, 1)
    with pytest.raises(RuntimeError), a.batch():
        a.local_put("lost", 1, 2)
        raise RuntimeError("scanner crashed")
    assert a.get("lost") is None and a.revision == 1 and a.since() == {pid("a"): 1}
    assert [type(e) for e in a.take_events()] == [RecordChanged]
    assert a.store.check() == []
    assert a.local_put("next", 2, 3).record.last_updated_rev == 2


def test_rejected_message_inside_a_batch_undoes_only_itself():
    r = replica("r", read_only=True)
    r.attach("w", peer_read_only=False)
    with r.batch():
        r.receive("w", signed_update(name="a", rev=1, key="good", uuid="1" * 32))
        r.receive("w", signed_update(name="b", rev=1, key="forged", sign=FORGER, uuid="2" * 32))
        r.receive("w", signed_update(name="a", rev=2, key="good2", uuid="3" * 32))
    assert r.get("good") is not None and r.get("good2") is not None
    assert r.get("forged") is None
    assert r.since() == {pid("a"): 2}
    kinds = [type(e) for e in r.take_events()]
    assert kinds.count(UpdateRejected) == 1 and kinds.count(RecordChanged) == 2
