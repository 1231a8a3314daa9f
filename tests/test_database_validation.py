"""Hostile input: every field of a peer's database message is checked, nothing crashes."""

from __future__ import annotations

import random

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csembed.database import Limits, Replica, Store, UpdateRejected, ed25519_verifier
from csembed.database.errors import InvalidUpdate
from csembed.database.record import GetUpdates
from csembed.protocol.wire import Message, encode_body, parse_body

VERIFY = ed25519_verifier(bytes(nacl.signing.SigningKey(bytes(32)).verify_key))
AUTHOR = "b934d9de020109fde790cd39acce73fc"


def good_body(**overrides):
    body = {
        "type": "database.update",
        "key": "photo-1234",
        "value": {"camera": "NIKON"},
        "uuid": "9223bf8014507dca629123485dc3a207",
        "last_updated_by": AUTHOR,
        "last_updated_rev": 15,
        "update_time": "2014-02-23T23:45:39Z",
        "vector_clock": {AUTHOR: 15, "d38a0af145c48b75289e72985e3cc50a": 35},
        "deleted": False,
    }
    for key, value in overrides.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def fresh() -> Replica:
    r = Replica(Store(":memory:", peer_id="a" * 32), read_only=False, verify=VERIFY,
                sign=lambda raw: b"s" * 64, rng=random.Random(0).randbytes,
                limits=Limits(max_key_bytes=64, max_clock_entries=4, max_since_entries=3))
    r.attach("peer", peer_read_only=False)
    return r


def deliver_raw_body(r: Replica, body: dict) -> list:
    # Built directly (not through encode_body), so bodies the encoder would
    # refuse -- lone surrogates, NaN -- still reach the replica.
    return r.receive("peer", Message(body=body, raw=b"{}", signature=None))


BAD_UPDATES = [
    ("key", ...), ("key", 5), ("key", ""), ("key", "x" * 65), ("key", "\ud800"),
    ("value", float("nan")), ("value", {1, 2}),
    ("uuid", ...), ("uuid", "9223BF8014507DCA629123485DC3A207"), ("uuid", "9223"),
    ("uuid", 12), ("uuid", "z" * 32),
    ("last_updated_by", ...), ("last_updated_by", "b934d9de020109fde790cd39acce73f"),
    ("last_updated_by", None),
    ("last_updated_rev", ...), ("last_updated_rev", 0), ("last_updated_rev", -1),
    ("last_updated_rev", 2**63), ("last_updated_rev", True), ("last_updated_rev", 15.0),
    ("last_updated_rev", "15"),
    ("update_time", ...), ("update_time", 1393199139), ("update_time", "yesterday"),
    ("update_time", "2014-02-23T23:45:39"), ("update_time", "2014-02-30T23:45:39Z"),
    ("update_time", "9999-02-23T23:45:39Z"), ("update_time", "2014-02-23T23:45:39.1234567890Z"),
    ("vector_clock", ...), ("vector_clock", []), ("vector_clock", {}),
    ("vector_clock", {AUTHOR: 14}), ("vector_clock", {AUTHOR: 15, "nothex": 1}),
    ("vector_clock", {AUTHOR: 15, "d38a0af145c48b75289e72985e3cc50a": -1}),
    ("vector_clock", {AUTHOR: 15, "d38a0af145c48b75289e72985e3cc50a": 2**63}),
    ("vector_clock", {AUTHOR: 15, "d38a0af145c48b75289e72985e3cc50a": False}),
    ("vector_clock", {AUTHOR: 15, **{f"{i:032x}": 1 for i in range(4)}}),
    ("deleted", "no"), ("deleted", 0), ("deleted", None),
]


@pytest.mark.parametrize(("field", "value"), BAD_UPDATES,
                         ids=[f"{f}={str(v)[:20]}" for f, v in BAD_UPDATES])
def test_bad_update_field_is_rejected_with_its_name(field, value):
    r = fresh()
    assert deliver_raw_body(r, good_body(**{field: value})) == []
    (event,) = r.take_events()
    assert isinstance(event, UpdateRejected)
    assert field in event.reason
    assert r.store.count() == 0 and r.since() == {}


def test_good_body_is_accepted_and_optional_deleted_defaults_to_false():
    r = fresh()
    deliver_raw_body(r, good_body(deleted=...))
    got = r.get("photo-1234")
    assert got is not None and got.deleted is False
    assert got.update_time_text == "2014-02-23T23:45:39.000000000Z"


BAD_SINCE: list[object] = [None, [], "x", {"short": 1}, {"a" * 32: -1}, {"a" * 32: 1.5},
             {"a" * 32: 2**63}, {f"{i:032x}": 1 for i in range(4)}]


@pytest.mark.parametrize("since", BAD_SINCE)
def test_bad_since_is_rejected(since):
    r = fresh()
    r.local_put("k", 1, 1)
    assert r.receive("peer", Message(body={"type": "database.get_updates", "since": since},
                                     raw=b"{}")) == []
    (_, event) = r.take_events()
    assert isinstance(event, UpdateRejected) and "since" in event.reason
    assert not r.has_pending("peer")


def test_since_accepts_zero_and_int64_max():
    since = {"a" * 32: 0, "b" * 32: 2**63 - 1}
    assert GetUpdates.from_body({"since": since}, Limits()).since == since
    with pytest.raises(InvalidUpdate):
        GetUpdates.from_body({"since": {"A" * 32: 1}}, Limits())


def test_too_many_concurrent_versions_are_refused():
    r = Replica(Store(":memory:", peer_id="a" * 32), read_only=False, verify=VERIFY,
                rng=random.Random(0).randbytes, limits=Limits(max_versions=3))
    r.attach("peer", peer_read_only=False)
    for i in range(5):
        author = f"{i + 1:032x}"
        deliver_raw_body(r, good_body(last_updated_by=author, last_updated_rev=1,
                                      vector_clock={author: 1}))
    rejected = [e for e in r.take_events() if isinstance(e, UpdateRejected)]
    assert len(rejected) == 2 and "concurrent versions" in rejected[0].reason
    assert r.store.count() == 3
    assert r.store.check() == []


def test_database_messages_with_a_payload_are_rejected():
    r = fresh()
    raw = encode_body(good_body())
    r.receive("peer", Message(body=parse_body(raw), raw=raw, has_payload=True))
    (event,) = r.take_events()
    assert isinstance(event, UpdateRejected) and "payload" in event.reason
    assert r.store.count() == 0


def test_unknown_message_types_are_ignored():
    r = fresh()
    assert r.receive("peer", Message(body={"type": "database.future"}, raw=b"{}")) == []
    assert r.receive("peer", Message(body={"type": "core.ping"}, raw=b"{}")) == []
    assert r.take_events() == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)
field_values = st.one_of(
    json_values,
    st.sampled_from([AUTHOR, "2014-02-23T23:45:39Z", 15, 2**63, -1, {AUTHOR: 15}]),
)


@settings(max_examples=300, deadline=None)
@given(
    mutations=st.dictionaries(
        st.sampled_from(["key", "value", "uuid", "last_updated_by", "last_updated_rev",
                         "update_time", "vector_clock", "deleted", "type", "since"]),
        field_values,
        max_size=4,
    ),
    kind=st.sampled_from(["database.update", "database.get_updates"]),
    signature=st.none() | st.binary(min_size=1, max_size=80),
)
def test_random_bodies_never_crash(mutations, kind, signature):
    r = fresh()
    body = good_body()
    body.update(mutations)
    body["type"] = kind
    try:
        raw = encode_body(body)
    except (TypeError, ValueError):
        return
    msg = Message(body=parse_body(raw), raw=raw, signature=signature)
    r.receive("peer", msg)
    r.take_events()
    assert r.store.check() == []
