"""The store's memos of parsed versions and of lookups by key: repeated lookups
reuse one Record and run no query, a new version, a deletion or a rollback is
never hidden by them, and they stay bounded. Also: the revision counter is
written once per transaction."""

from __future__ import annotations

import random

from csembed.database import Replica, Store, ed25519_signer
from csembed.database.store import KEY_MEMO, RECORD_MEMO

PEER = "a" * 32


def replica(tmp_path) -> Replica:
    return Replica(Store(tmp_path / "share.sqlite3", peer_id=PEER), read_only=False,
                   verify=lambda raw, sig: True, sign=ed25519_signer(bytes(range(32))),
                   rng=random.Random(1).randbytes)


def test_repeated_lookups_parse_once_and_follow_new_versions(tmp_path) -> None:
    r = replica(tmp_path)
    r.local_put("/f", {"size": 1}, 10)
    first = r.get("/f")
    assert first is not None and r.get("/f") is first  # the memo answered
    r.local_put("/f", {"size": 2}, 11)
    second = r.get("/f")
    assert second is not None and second is not first and second.value == {"size": 2}
    r.local_delete("/f", 12)
    assert r.get("/f") is None
    tomb = r.get_uuid(second.uuid)
    assert tomb is not None and tomb.deleted
    r.store.close()


def test_memo_is_bounded(tmp_path) -> None:
    r = replica(tmp_path)
    with r.batch():
        for i in range(RECORD_MEMO + 50):
            r.local_put(f"/k{i}", i, 10 + i)
    for i in range(RECORD_MEMO + 50):
        record = r.get(f"/k{i}")
        assert record is not None and record.value == i
    assert len(r.store._memo) == RECORD_MEMO
    r.store.close()


def _statements(store: Store, start: str) -> list[str]:
    """Collects the SQL statements ``store`` runs that begin with ``start``."""
    seen: list[str] = []
    store._db.set_trace_callback(
        lambda sql: seen.append(sql) if sql.lstrip().upper().startswith(start) else None)
    return seen


def test_a_key_looked_up_again_costs_no_query(tmp_path) -> None:
    r = replica(tmp_path)
    r.local_put("/f", {"size": 1}, 10)
    assert r.get("/f") is not None
    selects = _statements(r.store, "SELECT")
    for _ in range(5):
        record = r.get("/f")
        assert record is not None and record.value == {"size": 1}
    assert selects == []
    r.store.close()


def test_key_memo_follows_writes_and_rollbacks(tmp_path) -> None:
    r = replica(tmp_path)
    r.local_put("/f", {"size": 1}, 10)
    assert r.get("/f") is not None and r.get("/g") is None
    r.local_rename("/f", "/g", 11)  # both keys' answers change
    assert r.get("/f") is None
    moved = r.get("/g")
    assert moved is not None and moved.value == {"size": 1}
    try:
        with r.store.transaction():
            r.local_put("/h", {"size": 3}, 12)
            assert r.get("/h") is not None  # remembered inside the transaction...
            raise RuntimeError("undo")
    except RuntimeError:
        pass
    assert r.get("/h") is None  # ...and forgotten with it
    r.store.close()


def test_key_memo_is_bounded(tmp_path) -> None:
    r = replica(tmp_path)
    for i in range(KEY_MEMO + 50):
        assert r.get(f"/missing{i}") is None
    assert len(r.store._key_memo) == KEY_MEMO
    r.store.close()


def test_revision_counter_is_written_once_per_transaction(tmp_path) -> None:
    r = replica(tmp_path)
    updates = _statements(r.store, "UPDATE META")
    with r.batch():
        for i in range(100):
            r.local_put(f"/k{i}", i, 10 + i)
    assert len(updates) == 1 and r.revision == 100
    try:
        with r.batch():
            r.local_put("/lost", 1, 500)
            raise RuntimeError("undo")
    except RuntimeError:
        pass
    assert r.revision == 100 and len(updates) == 1
    r.store.close()
    reopened = Store(tmp_path / "share.sqlite3", peer_id=PEER)
    assert reopened.revision == 100
    reopened.close()
