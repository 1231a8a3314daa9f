"""The SQLite store: durability settings, persistence, consistency checks."""

from __future__ import annotations

import random
import sqlite3

import pytest

from csembed.board_profile import iter_boards, load_board
from csembed.database import Replica, Store, StoreError, ed25519_signer, ed25519_verifier
from csembed.database.store import SYNCHRONOUS_LEVELS, share_database_path
from csembed.protocol.wire import Message, encode_body, parse_body

SEED = bytes(range(32))
SIGN = ed25519_signer(SEED)
PEER = "a" * 32
OTHER = "b" * 32


def verify(raw: bytes, sig: bytes) -> bool:
    import nacl.signing

    return ed25519_verifier(bytes(nacl.signing.SigningKey(SEED).verify_key))(raw, sig)


def open_replica(path, *, peer=PEER, read_only=False, **store_args) -> Replica:
    return Replica(Store(path, peer_id=peer, **store_args), read_only=read_only, verify=verify,
                   sign=None if read_only else SIGN, rng=random.Random(str(path)).randbytes)


@pytest.mark.parametrize("board", list(iter_boards()), ids=lambda b: b.name)
def test_durability_policy_comes_from_the_board_profile(tmp_path, board):
    storage = board.storage
    store = Store(tmp_path / "share.sqlite3", peer_id=PEER,
                  synchronous=storage.db_synchronous,
                  checkpoint_pages=storage.db_checkpoint_pages)
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == SYNCHRONOUS_LEVELS[storage.db_synchronous]
    assert store.pragma("wal_autocheckpoint") == storage.db_checkpoint_pages
    store.close()


def test_wifi_piano_avoids_a_sync_per_write(tmp_path):
    storage = load_board("wifi-piano").storage
    assert storage.db_synchronous != "full"
    assert storage.db_checkpoint_pages >= 1000


def test_everything_survives_reopening(tmp_path):
    path = tmp_path / "share.sqlite3"
    a = open_replica(path)
    a.local_put("x", {"deep": [1, {"two": 2}]}, 10)
    a.local_put("y", "why", 11)
    a.local_delete("y", 12)
    a.attach("peer", peer_read_only=False)
    body = {"type": "database.update", "key": "z", "value": 3, "uuid": "c" * 32,
            "last_updated_by": OTHER, "last_updated_rev": 9,
            "update_time": "2020-01-01T00:00:00.123456789Z", "vector_clock": {OTHER: 9},
            "extra": "kept"}
    raw = encode_body(body)
    a.receive("peer", Message(body=parse_body(raw), raw=raw, signature=SIGN(raw)))
    before = sorted((v.dot, v.raw, v.signature) for v in a.store.iter_versions())
    a.store.close()

    b = open_replica(path)
    assert b.revision == 3
    assert b.since() == {PEER: 3, OTHER: 9}
    assert sorted((v.dot, v.raw, v.signature) for v in b.store.iter_versions()) == before
    assert b.get("x").value == {"deep": [1, {"two": 2}]}
    assert b.get("y") is None
    z = b.get("z")
    assert z.update_time == 1577836800_123456789 and z.signature == SIGN(raw)
    assert b.local_put("x", 2, 20).record.last_updated_rev == 4
    assert b.store.check() == []
    b.store.close()

    # The since map is its own table, and the draft's fields are real columns.
    db = sqlite3.connect(path)
    assert dict(db.execute("SELECT peer, revision FROM peer_revisions")) == {PEER: 4, OTHER: 9}
    row = db.execute(
        "SELECT key, value, uuid, last_updated_by, last_updated_rev, update_time,"
        " vector_clock, deleted FROM records WHERE key = 'z'").fetchone()
    assert row == ("z", "3", "c" * 32, OTHER, 9, "2020-01-01T00:00:00.123456789Z",
                   f'{{"{OTHER}":9}}', 0)
    db.close()


def test_opening_another_peers_database_is_refused(tmp_path):
    path = tmp_path / "share.sqlite3"
    Store(path, peer_id=PEER).close()
    with pytest.raises(StoreError, match="belongs to peer"):
        Store(path, peer_id=OTHER)


def test_unknown_schema_is_refused(tmp_path):
    path = tmp_path / "share.sqlite3"
    Store(path, peer_id=PEER).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = 99 WHERE name = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema"):
        Store(path, peer_id=PEER)


def test_not_a_database_is_a_store_error(tmp_path):
    path = tmp_path / "share.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        Store(path, peer_id=PEER)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Store(":memory:", peer_id="nope")
    with pytest.raises(ValueError):
        Store(":memory:", peer_id=PEER, synchronous="sometimes")
    with pytest.raises(ValueError):
        Store(":memory:", peer_id=PEER, checkpoint_pages=0)


def test_a_failed_transaction_leaves_nothing_behind():
    store = Store(":memory:", peer_id=PEER)
    with pytest.raises(RuntimeError), store.transaction():
        store.allocate_revision()
        store.note_seen(OTHER, 5)
        raise RuntimeError("boom")
    assert store.revision == 0 and dict(store.seen) == {}
    assert store.check() == []
    with pytest.raises(StoreError, match="inside"):
        store.allocate_revision()


def test_check_finds_damage(tmp_path):
    path = tmp_path / "share.sqlite3"
    a = open_replica(path)
    a.local_put("x", 1, 1)
    a.local_put("y", 1, 1)
    assert a.store.check() == []
    a.store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE records SET visible = 1")
    db.execute("UPDATE records SET uuid = ?", ("d" * 32,))
    db.execute("UPDATE meta SET value = 1 WHERE name = 'revision'")
    db.execute("UPDATE peer_revisions SET revision = 1")
    db.commit()
    db.close()
    problems = Store(path, peer_id=PEER).check()
    assert any("revision counter" in p for p in problems)
    assert any("peer_revisions" in p for p in problems)
    assert any("winners" in p for p in problems)


def test_streaming_iteration_crosses_batches():
    a = open_replica(":memory:")
    for i in range(600):
        a.local_put(f"k{i:03d}", i, i)
    assert [r.value for r in a.records()] == list(range(600))
    assert a.store.count() == 600


def test_share_database_path(tmp_path):
    assert share_database_path(tmp_path, "ab12") == tmp_path / "databases" / "ab12.sqlite3"
    with pytest.raises(ValueError):
        share_database_path(tmp_path, "../x")
