"""The store's memo of parsed versions: repeated lookups reuse one Record, a new
version or a deletion is never hidden by it, and it stays bounded."""

from __future__ import annotations

import random

from csembed.database import Replica, Store, ed25519_signer
from csembed.database.store import RECORD_MEMO

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
