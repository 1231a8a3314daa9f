"""``clearskies:2`` known-answer vectors, recomputed independently.

``tests/vectors/handshake.json`` holds, for fixed random inputs, every value
of the handshake: the password scalar, both points, ``K``, the transcript
hash, the master secret, each derived key, both MACs and the exact handshake
bytes. The tests recompute all of it a second way -- BLAKE2b from Python's
``hashlib`` instead of libsodium, and ``K`` as ``(x*y)*G`` instead of
``x*(S - w*N)`` -- so the vectors pin that every MAC and key comes from the
SPAKE2 result, and then check that :class:`SecureSession` puts exactly those
bytes on the wire. ``handshake_records.json`` is a recorded secretstream
(libsodium picks the stream header itself, so records are opened, not
re-sealed). Regenerate with ``python tests/test_handshake_vectors.py``
(only after a deliberate protocol change).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
import pytest

from csembed.security import spake2
from csembed.security.errors import RecordError
from csembed.security.handshake import MAGIC, SecureSession
from csembed.security.records import LENGTH_BYTES, RecordReader, RecordWriter

VECTORS = Path(__file__).parent / "vectors"
HANDSHAKE = VECTORS / "handshake.json"
RECORDS = VECTORS / "handshake_records.json"


def lp(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def b2b(data: bytes, size: int, key: bytes = b"") -> bytes:
    """BLAKE2b from hashlib: an implementation independent of libsodium's."""
    return hashlib.blake2b(data, digest_size=size, key=key).digest()


class FixedRng:
    """Hands out pre-recorded byte strings in order, checking the sizes asked for."""

    def __init__(self, *draws: bytes) -> None:
        self.draws = list(draws)

    def __call__(self, n: int) -> bytes:
        data = self.draws.pop(0)
        assert len(data) == n, f"asked for {n} bytes, vector has {len(data)}"
        return data


def _label(text: str, n: int) -> bytes:
    return b2b(text.encode(), n)


CASES: list[dict[str, Any]] = [
    {"name": "access code secret (8 bytes)", "id_hex": _label("access id", 32).hex(),
     "password": _label("code secret", 8).hex()},
    {"name": "access level key (32 bytes)", "id_hex": _label("key id", 32).hex(),
     "password": _label("level key", 32).hex()},
    {"name": "username and password", "id_hex": hashlib.sha256(b"alice").hexdigest(),
     "password": b"correct horse".hex()},
]


def compute_case(case: dict[str, Any]) -> dict[str, Any]:
    """Every handshake value for one case, computed the independent way."""
    identity = ("clearskies:2:" + case["id_hex"]).encode()
    password = bytes.fromhex(case["password"])
    client_random = _label(case["name"] + " client scalar", 64)
    server_random = _label(case["name"] + " server scalar", 64)
    m = sodium.crypto_core_ed25519_from_uniform(b2b(spake2.M_SEED, 32))
    n = sodium.crypto_core_ed25519_from_uniform(b2b(spake2.N_SEED, 32))
    w = sodium.crypto_core_ed25519_scalar_reduce(
        b2b(lp(b"clearskies:2 password scalar") + lp(identity) + lp(password), 64))
    x = sodium.crypto_core_ed25519_scalar_reduce(client_random)
    y = sodium.crypto_core_ed25519_scalar_reduce(server_random)
    base = sodium.crypto_scalarmult_ed25519_base_noclamp
    mul = sodium.crypto_scalarmult_ed25519_noclamp
    t = sodium.crypto_core_ed25519_add(base(x), mul(w, m))
    s = sodium.crypto_core_ed25519_add(base(y), mul(w, n))
    k = base(sodium.crypto_core_ed25519_scalar_mul(x, y))  # x*y*G, not via T or S
    th = b2b(lp(b"clearskies:2 transcript") + lp(identity) + lp(b"client") + lp(t)
             + lp(b"server") + lp(s), 32)
    master = b2b(lp(b"clearskies:2 master secret") + lp(th) + lp(w), 64, key=k)
    keys = {name: b2b(lp(purpose), 32, key=master) for name, purpose in {
        "client_confirm_key": b"clearskies:2 client confirmation key",
        "server_confirm_key": b"clearskies:2 server confirmation key",
        "client_to_server_key": b"clearskies:2 stream key client to server",
        "server_to_client_key": b"clearskies:2 stream key server to client",
        "channel_binding": b"clearskies:2 channel binding",
    }.items()}
    client_mac = b2b(th, 32, key=keys["client_confirm_key"])
    server_mac = b2b(th, 32, key=keys["server_confirm_key"])
    out = {
        **case, "identity": identity.decode(),
        "client_random": client_random.hex(), "server_random": server_random.hex(),
        "w": w.hex(), "x": x.hex(), "y": y.hex(), "T": t.hex(), "S": s.hex(), "K": k.hex(),
        "transcript_hash": th.hex(), "master_secret": master.hex(),
        **{name: value.hex() for name, value in keys.items()},
        "client_mac": client_mac.hex(), "server_mac": server_mac.hex(),
        "client_hello": (MAGIC + bytes([len(identity)]) + identity + t).hex(),
        "server_hello": (s + server_mac).hex(),
    }
    return out


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


HANDSHAKE_VECTORS = load(HANDSHAKE)["cases"] if HANDSHAKE.exists() else []


def test_constants_match_the_seeds() -> None:
    constants = load(HANDSHAKE)["constants"]
    assert constants["M"] == spake2.M.hex()
    assert constants["N"] == spake2.N.hex()
    assert constants["magic"] == MAGIC.hex()
    assert constants["M_seed"] == spake2.M_SEED.decode()
    assert constants["N_seed"] == spake2.N_SEED.decode()
    assert sodium.crypto_core_ed25519_is_valid_point(spake2.M)
    assert sodium.crypto_core_ed25519_is_valid_point(spake2.N)
    assert spake2.M != spake2.N


@pytest.mark.parametrize("vector", HANDSHAKE_VECTORS, ids=lambda v: v["name"])
def test_vector_recomputes_independently(vector: dict[str, Any]) -> None:
    case = {k: vector[k] for k in ("name", "id_hex", "password")}
    assert compute_case(case) == vector


@pytest.mark.parametrize("vector", HANDSHAKE_VECTORS, ids=lambda v: v["name"])
def test_module_key_schedule_matches_vector(vector: dict[str, Any]) -> None:
    h = bytes.fromhex
    identity = vector["identity"].encode()
    password = h(vector["password"])
    assert spake2.password_scalar(identity, password).hex() == vector["w"]
    client = spake2.Spake2("client", identity, password, FixedRng(h(vector["client_random"])))
    server = spake2.Spake2("server", identity, password, FixedRng(h(vector["server_random"])))
    assert client.message.hex() == vector["T"]
    assert server.message.hex() == vector["S"]
    client_keys = client.finish(server.message)
    server_keys = server.finish(client.message)
    assert client_keys == server_keys
    for name in ("transcript_hash", "client_confirm_key", "server_confirm_key",
                 "client_to_server_key", "server_to_client_key", "channel_binding",
                 "client_mac", "server_mac"):
        assert getattr(client_keys, name).hex() == vector[name], name


@pytest.mark.parametrize("vector", HANDSHAKE_VECTORS, ids=lambda v: v["name"])
def test_session_puts_the_vector_bytes_on_the_wire(vector: dict[str, Any]) -> None:
    h = bytes.fromhex
    password = h(vector["password"])
    client = SecureSession.client(vector["id_hex"], password, now=0.0,
                                  rng=FixedRng(h(vector["client_random"])))
    server = SecureSession.server(lambda id_hex, now: password
                                  if id_hex == vector["id_hex"] else None, now=0.0,
                                  rng=FixedRng(h(vector["server_random"])))
    hello = client.data_to_send()
    assert hello.hex() == vector["client_hello"]
    server.receive_data(hello, 0.0)
    server.next_event()
    server_hello = server.data_to_send()
    assert server_hello.hex() == vector["server_hello"]
    client.receive_data(server_hello, 0.0)
    client.next_event()
    finish = client.data_to_send()
    assert finish[:32].hex() == vector["client_mac"]
    assert len(finish) == 32 + 24  # MAC + client stream header


def test_every_key_depends_on_k() -> None:
    """The same transcript and password with a different K gives unrelated keys:
    nothing is derived from the password or the transcript alone."""
    vector = HANDSHAKE_VECTORS[0]
    h = bytes.fromhex
    args = (h(vector["w"]), vector["identity"].encode(), h(vector["T"]), h(vector["S"]))
    real = spake2.derive_keys(h(vector["K"]), *args)
    other = spake2.derive_keys(spake2.M, *args)
    assert real.transcript_hash == other.transcript_hash  # the public part only
    for name in ("client_confirm_key", "server_confirm_key", "client_to_server_key",
                 "server_to_client_key", "channel_binding", "client_mac", "server_mac"):
        assert getattr(real, name) != getattr(other, name)


def test_recorded_stream_opens_in_order() -> None:
    recorded = load(RECORDS)
    reader = RecordReader(bytes.fromhex(recorded["key"]), bytes.fromhex(recorded["header"]))
    for record in recorded["records"]:
        framed = bytes.fromhex(record["framed"])
        assert RecordReader.frame_length(framed[:LENGTH_BYTES]) == len(framed) - LENGTH_BYTES
        plaintext, final = reader.open(framed[LENGTH_BYTES:])
        assert plaintext.hex() == record["plaintext"]
        assert final == record["final"]
    assert reader.finished


def test_recorded_stream_refuses_a_skipped_record() -> None:
    recorded = load(RECORDS)
    reader = RecordReader(bytes.fromhex(recorded["key"]), bytes.fromhex(recorded["header"]))
    second = bytes.fromhex(recorded["records"][1]["framed"])
    with pytest.raises(RecordError, match="record 1 failed authentication"):
        reader.open(second[LENGTH_BYTES:])


def regenerate() -> None:
    """Rewrite both vector files (run by hand after a deliberate change)."""
    HANDSHAKE.write_text(json.dumps({
        "description": "clearskies:2 handshake known answers; see protocol/handshake.md. "
                       "All byte strings are hex. client_random/server_random are the 64 "
                       "bytes each side draws for its SPAKE2 scalar (reduced mod L).",
        "constants": {"magic": MAGIC.hex(), "M_seed": spake2.M_SEED.decode(),
                      "N_seed": spake2.N_SEED.decode(), "M": spake2.M.hex(),
                      "N": spake2.N.hex()},
        "cases": [compute_case(c) for c in CASES],
    }, indent=1) + "\n")
    key = _label("record key", 32)
    writer = RecordWriter(key)
    plaintexts = [b"opaque record plaintext", b"", b"third record",
                  bytes(range(256)) * 3]
    records = [{"plaintext": p.hex(), "final": False, "framed": writer.seal(p).hex()}
               for p in plaintexts]
    records.append({"plaintext": "", "final": True, "framed": writer.seal(final=True).hex()})
    RECORDS.write_text(json.dumps({
        "description": "A recorded client-to-server secretstream: u16 length + ciphertext "
                       "per record; the last is the FINAL-tagged close record.",
        "key": key.hex(), "header": writer.header.hex(), "records": records,
    }, indent=1) + "\n")


if __name__ == "__main__":
    regenerate()
