"""Fuzzing the signature loader and the delta decoder with hostile input.

Every input must end in success or an :class:`RsyncError` -- never another
exception, a crash of the C code, a hang or a large allocation -- and the C
and pure backends must agree exactly: same output, or same error class and
message. Inputs come from hypothesis and from seeded random mutation (bit
flips, byte changes, truncation, insertion, duplication) of valid streams.
"""

from __future__ import annotations

import io
import random
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import csembed.native as native
from csembed import rsync
from csembed.native import rsync_format as fmt
from csembed.rsync import DeltaWriter, Patcher, RsyncError, Signature, SignatureWriter

BACKENDS = [native.get_backend(b) for b in native.available_backends()]
BASIS = random.Random(1).randbytes(5000)
NEW = BASIS[:1200] + b"changed" + BASIS[1300:4000] + random.Random(2).randbytes(300)


def signature_of(basis: bytes, magic: int = rsync.DEFAULT_MAGIC, block: int = 300,
                 strong: int = 8) -> bytes:
    w = SignatureWriter(block, strong, magic, backend="python")
    return w.update(basis) + w.finish()


def delta_of(sig: bytes, new: bytes) -> bytes:
    d = DeltaWriter(Signature.from_bytes(sig, backend="python"))
    return d.update(new) + d.finish()


VALID_SIG = signature_of(BASIS)
VALID_DELTA = delta_of(VALID_SIG, NEW)
# A delta using every command width, and immediate and long literals.
RICH_DELTA = (b"rs\x026" + b"\x45\x05\x03" + b"\x46\x00\x01\x00" + b"\x4a\x00\x10\x01\x00"
              + b"\x4f\x00\x00\x00\x20\x00\x00\x00\x05" + b"\x54" + (7).to_bytes(8, "big")
              + (9).to_bytes(8, "big") + b"\x02ab" + b"\x41\x41" + b"L" * 65
              + b"\x42\x00\x03xyz" + b"\x43\x00\x00\x00\x01q" + b"\x44" + (2).to_bytes(8, "big")
              + b"zz" + b"\x00")


def outcome_patch(delta: bytes, backend: ModuleType, piece: int) -> tuple[str, str]:
    """('ok', output hex) or (error class, message) of patching BASIS with ``delta``."""
    p = Patcher(io.BytesIO(BASIS), max_output=1 << 20, backend=backend)
    out = bytearray()
    try:
        for i in range(0, max(len(delta), 1), piece):
            for chunk in p.update(delta[i:i + piece]):
                out += chunk
        p.finish()
    except RsyncError as exc:
        return type(exc).__name__, str(exc)
    return "ok", bytes(out).hex()


def outcome_signature(sig: bytes, backend: ModuleType, piece: int) -> tuple[str, str]:
    s = Signature(max_size=1 << 16, backend=backend)
    try:
        for i in range(0, len(sig), piece):
            s.update(sig[i:i + piece])
        s.finish()
        d = DeltaWriter(s)
        d.update(NEW)
        d.finish()
    except RsyncError as exc:
        return type(exc).__name__, str(exc)
    return "ok", f"{s.block_count} {s.params}"


def mutate(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(6)
        at = rnd.randrange(len(b) + 1)
        if op == 0 and b:
            b[at % len(b)] ^= 1 << rnd.randrange(8)
        elif op == 1 and b:
            b[at % len(b)] = rnd.randrange(256)
        elif op == 2:
            del b[at:]
        elif op == 3:
            b[at:at] = rnd.randbytes(rnd.randint(1, 20))
        elif op == 4:
            b[at:at] = b[at:at + rnd.randint(1, 30)]
        else:
            del b[at:at + rnd.randint(1, 30)]
    return bytes(b)


def agree(results: list[tuple[str, str]]) -> tuple[str, str]:
    assert len(set(results)) == 1, results
    return results[0]


def test_rich_delta_decodes_the_same_everywhere() -> None:
    res = agree([outcome_patch(RICH_DELTA, m, p) for m in BACKENDS for p in (1, 3, 1000)])
    expected = (BASIS[5:8] + BASIS[0:256] + BASIS[16:272] + BASIS[32:37] + BASIS[7:16] + b"ab"
                + b"L" * 65 + b"xyz" + b"q" + b"zz")
    assert res == ("ok", expected.hex())


@pytest.mark.parametrize("seed", range(6))
def test_mutated_deltas(seed: int) -> None:
    rnd = random.Random(seed)
    kinds: set[str] = set()
    for _ in range(250):
        delta = mutate(rnd.choice([VALID_DELTA, RICH_DELTA]), rnd)
        piece = rnd.choice([1, 2, 5, 64, 100000])
        kind, _ = agree([outcome_patch(delta, m, piece) for m in BACKENDS])
        kinds.add(kind)
    assert "ok" in kinds and len(kinds) >= 3  # the mutations reach several outcomes


@pytest.mark.parametrize("seed", range(4))
def test_mutated_signatures(seed: int) -> None:
    rnd = random.Random(100 + seed)
    sources = [VALID_SIG, signature_of(BASIS, rsync.MD4_SIG_MAGIC, 64, 3),
               signature_of(BASIS[:100], rsync.BLAKE2_SIG_MAGIC, 1000, 32)]
    kinds: set[str] = set()
    for _ in range(60):
        sig = mutate(rnd.choice(sources), rnd)
        kinds.add(agree([outcome_signature(sig, m, rnd.choice([1, 7, 4096]))
                         for m in BACKENDS])[0])
    assert "ok" in kinds and len(kinds) >= 3


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=80), piece=st.integers(1, 40))
def test_random_delta_bodies(body: bytes, piece: int) -> None:
    agree([outcome_patch(b"rs\x026" + body, m, piece) for m in BACKENDS])


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 0xFF), st.binary(max_size=9)), max_size=12),
       piece=st.integers(1, 16))
def test_random_command_streams(ops: list[tuple[int, bytes]], piece: int) -> None:
    delta = b"rs\x026" + b"".join(bytes([op]) + arg for op, arg in ops) + b"\x00"
    agree([outcome_patch(delta, m, piece) for m in BACKENDS])


@settings(max_examples=200, deadline=None)
@given(head=st.tuples(st.sampled_from([*fmt.SIG_MAGICS, fmt.DELTA_MAGIC, 0, 0xFFFFFFFF]),
                      st.sampled_from([0, 1, 2, 300, 1 << 24, (1 << 24) + 1, 0xFFFFFFFF]),
                      st.integers(0, 40)),
       body=st.binary(max_size=200), piece=st.integers(1, 50))
def test_random_signatures(head: tuple[int, int, int], body: bytes, piece: int) -> None:
    raw = b"".join(v.to_bytes(4, "big") for v in head) + body
    agree([outcome_signature(raw, m, piece) for m in BACKENDS])


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda m: m.NAME)
def test_colliding_weak_sums_stay_cheap(backend: ModuleType) -> None:
    """A signature where every record has the weak sum of the new file's windows."""
    block = 64
    new = bytes(20_000)
    weak = backend.RabinKarp(new[:block]).digest()
    rnd = random.Random(3)
    records = b"".join(weak.to_bytes(4, "big") + rnd.randbytes(8) for _ in range(20_000))
    sig = Signature.from_bytes(b"rs\x01G" + block.to_bytes(4, "big") + (8).to_bytes(4, "big")
                               + records, backend=backend)
    d = DeltaWriter(sig)
    delta = d.update(new) + d.finish()  # strong sum per byte, binary search per hit
    assert d.stats.literal_bytes == len(new)
    assert outcome_patch(delta, backend, 4096) == ("ok", new.hex())
