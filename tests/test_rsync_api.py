"""The streaming rsync API on both backends: parameters, chunking, round trips, encoding.

Every test runs once per backend; several also check that the C and the pure
backend produce byte-identical signatures and deltas for the same input.
"""

from __future__ import annotations

import io
import os
import random
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import load, materialize

import csembed.native as native
from csembed import rsync
from csembed.native import rsync_format as fmt
from csembed.rsync import (
    BadMagicError,
    CorruptError,
    DeltaWriter,
    LimitError,
    Patcher,
    RsyncParamError,
    Signature,
    SignatureParams,
    SignatureWriter,
    TruncatedError,
)

BACKENDS = native.available_backends()
MAGICS = list(fmt.SIG_MAGICS)


@pytest.fixture(params=["c", "python"])
def backend(request: pytest.FixtureRequest) -> ModuleType:
    if request.param not in BACKENDS:
        pytest.skip("C extension csembed._native is not built")
    return native.get_backend(request.param)


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    """Split data into pieces of the given sizes (cycled), the last piece taking the rest."""
    out, i, k = [], 0, 0
    while i < len(data):
        n = max(1, sizes[k % len(sizes)])
        out.append(data[i:i + n])
        i, k = i + n, k + 1
    return out


def make_signature(basis: bytes, block_len: int, strong_len: int, magic: int,
                   backend: ModuleType, pieces: list[int] | None = None) -> bytes:
    w = SignatureWriter(block_len, strong_len, magic, backend=backend)
    return b"".join(w.update(c) for c in chunked(basis, pieces or [65536])) + w.finish()


def make_delta(sig: bytes, new: bytes, backend: ModuleType,
               pieces: list[int] | None = None) -> bytes:
    d = DeltaWriter(Signature.from_bytes(sig, backend=backend))
    return b"".join(d.update(c) for c in chunked(new, pieces or [65536])) + d.finish()


def apply_delta(basis: bytes, delta: bytes, backend: ModuleType,
                pieces: list[int] | None = None) -> bytes:
    p = Patcher(io.BytesIO(basis), backend=backend)
    out = bytearray()
    for c in chunked(delta, pieces or [65536]):
        for piece in p.update(c):
            out += piece
    p.finish()
    return bytes(out)


def commands(delta: bytes) -> list[tuple]:
    """Decode a delta into ("L", length) / ("C", pos, length) tuples with the pure decoder."""
    out: list[tuple] = []
    for event, a, b in native.pure.PatchDecoder().events(delta):
        if event == fmt.LITERAL:
            out.append(("L", b))
        elif event == fmt.COPY:
            out.append(("C", a, b))
        else:
            out.append(("END",))
    return out


# Parameters ---------------------------------------------------------------

@pytest.mark.parametrize(("size", "block_len"), [
    (None, 2048), (0, 256), (1, 256), (65536, 256), (65537, 256), (100003, 256),
    (256 << 20, 16384), (300 * 300, 256), (1 << 30, 32768), ((1 << 30) - 1, 32640),
])
def test_default_block_len(size: int | None, block_len: int) -> None:
    assert rsync.default_block_len(size) == block_len


@pytest.mark.parametrize(("size", "block_len", "minimum"), [
    (16, 256, 5), (100003, 256, 6), (256 << 20, 2048, 8), (None, 2048, 12), (0, 256, 5),
])
def test_min_strong_len_matches_facts_sheet(size: int | None, block_len: int,
                                            minimum: int) -> None:
    assert rsync.min_strong_len(size, block_len) == minimum


def test_params_for_basis() -> None:
    p = SignatureParams.for_basis(1 << 20)
    assert (p.magic, p.block_len, p.strong_len) == (rsync.RK_BLAKE2_SIG_MAGIC, 1024, 32)
    p = SignatureParams.for_basis(None, hash="md4", rollsum="rollsum", strong_len=-1)
    assert (p.magic, p.block_len, p.strong_len) == (rsync.MD4_SIG_MAGIC, 2048, 12)
    assert SignatureParams.for_basis(10, strong_len=3).strong_len == 3  # below minimum: allowed
    with pytest.raises(RsyncParamError, match="strong sum length must be 1..16"):
        SignatureParams.for_basis(10, hash="md4", strong_len=17)
    with pytest.raises(RsyncParamError, match="unknown hash"):
        SignatureParams.for_basis(10, hash="sha1")
    with pytest.raises(RsyncParamError, match="block length"):
        SignatureParams(rsync.DEFAULT_MAGIC, 0, 8)
    with pytest.raises(RsyncParamError, match="block length"):
        SignatureParams(rsync.DEFAULT_MAGIC, (1 << 24) + 1, 8)
    with pytest.raises(RsyncParamError, match="magic"):
        SignatureParams(rsync.DELTA_MAGIC, 256, 8)
    with pytest.raises(BadMagicError):
        SignatureWriter(256, 8, 0x12345678)


# Signatures ---------------------------------------------------------------

@pytest.mark.parametrize("case", load("rsync")["cases"],
                         ids=lambda c: f"{c['basis']}{''.join(c['options'])}")
def test_signature_equals_rdiff_vector(backend: ModuleType, case: dict) -> None:
    rnd = random.Random(2024)
    basis = {"basis": rnd.randbytes(3000), "empty": b"", "one": b"\x7f"}[case["basis"]]
    expected = bytes.fromhex(case["signature"])
    magic, bl, sl = (int.from_bytes(expected[i:i + 4], "big") for i in (0, 4, 8))
    assert make_signature(basis, bl, sl, magic, backend, [1, 999, 7]) == expected
    sig = Signature.from_bytes(expected, backend=backend)
    assert sig.block_count == -(-len(basis) // bl)


def test_rdiff_delta_vectors_apply(backend: ModuleType) -> None:
    doc = load("rsync")
    rnd = random.Random(2024)
    basis = rnd.randbytes(3000)
    new = basis[:700] + b"inserted!" + basis[700:1900] + basis[2100:] + rnd.randbytes(77)
    files = {"basis": basis, "empty": b"", "one": b"\x7f"}
    for case in doc["cases"]:
        delta = bytes.fromhex(case["rdiff_delta"])
        assert apply_delta(files[case["basis"]], delta, backend, [3, 50]) == new
        ours = make_delta(bytes.fromhex(case["signature"]), new, backend)
        assert apply_delta(files[case["basis"]], ours, backend) == new
        assert len(ours) <= len(delta) + 16  # as compact as rdiff's


def test_delta_matches_facts_sheet_hexdump(backend: ModuleType) -> None:
    fs = load("rsync")["facts_sheet"]
    basis, new = materialize(fs["basis"]), bytes.fromhex(fs["new"])
    sig = make_signature(basis, fs["block_len"], 32, rsync.DEFAULT_MAGIC, backend)
    assert make_delta(sig, new, backend, [100, 1]).hex() == fs["delta"]


def test_identical_and_empty_files(backend: ModuleType) -> None:
    basis = os.urandom(1024)
    sig = make_signature(basis, 256, 32, rsync.DEFAULT_MAGIC, backend)
    assert make_delta(sig, basis, backend).hex() == "72730236" "46" "00" "0400" "00"
    assert make_delta(sig, b"", backend).hex() == "7273023600"
    empty_sig = make_signature(b"", 256, 32, rsync.DEFAULT_MAGIC, backend)
    assert empty_sig.hex() == "72730147" "00000100" "00000020"
    assert commands(make_delta(empty_sig, b"abc", backend)) == [("L", 3), ("END",)]


def test_literal_runs_split_like_librsync(backend: ModuleType) -> None:
    basis = os.urandom(4096)
    new = os.urandom(100000)
    delta = make_delta(make_signature(basis, 512, 8, rsync.DEFAULT_MAGIC, backend), new,
                       backend, [4096, 77])
    assert commands(delta) == [("L", 32768)] * 3 + [("L", 100000 - 3 * 32768), ("END",)]
    assert len(delta) == 4 + 4 * 3 + 100000 + 1  # LITERAL_N2 headers, END
    assert apply_delta(basis, delta, backend) == new


def test_adjacent_copies_merge_and_widths(backend: ModuleType) -> None:
    basis = os.urandom(70000)
    new = basis[:30000] + b"!" + basis[30000:] + basis[:256]
    delta = make_delta(make_signature(basis, 256, 32, rsync.DEFAULT_MAGIC, backend), new,
                       backend)
    # Block 117 (29952..30208) holds the inserted byte, so it goes as a literal
    # together with the "!"; blocks 118..272 copy as one merged COPY; the short
    # last block (112 bytes) can only match at the end of the file, so here it
    # is literal; then block 0 again.
    assert commands(delta) == [("C", 0, 29952), ("L", 257), ("C", 30208, 39680), ("L", 112),
                               ("C", 0, 256), ("END",)]
    assert delta[4] == 0x46  # COPY_N1_N2: position 0 in one byte, length 29952 in two
    assert apply_delta(basis, delta, backend) == new


def test_repeated_blocks_copy_in_one_command(backend: ModuleType) -> None:
    basis = bytes(100000)  # every block identical
    delta = make_delta(make_signature(basis, 1000, 16, rsync.MD4_SIG_MAGIC, backend), basis,
                       backend)
    assert commands(delta) == [("C", 0, 100000), ("END",)]


@pytest.mark.parametrize("magic", MAGICS)
def test_short_last_block_matches_at_the_tail(backend: ModuleType, magic: int) -> None:
    basis = os.urandom(1000)  # blocks of 300: the last one is 100 bytes
    new = b"prefix" + basis[:900] + b"middle" + basis[900:]
    sig = make_signature(basis, 300, 12, magic, backend)
    delta = make_delta(sig, new, backend)
    assert commands(delta) == [("L", 6), ("C", 0, 900), ("L", 6), ("C", 900, 100), ("END",)]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 6000),
       block=st.sampled_from([1, 7, 64, 256, 1000]), magic=st.sampled_from(MAGICS),
       cuts=st.lists(st.integers(1, 3000), min_size=1, max_size=4))
def test_round_trip_and_backends_agree(seed: int, size: int, block: int, magic: int,
                                       cuts: list[int]) -> None:
    rnd = random.Random(seed)
    basis = rnd.randbytes(size)
    new = bytearray(basis)
    for _ in range(rnd.randint(0, 5)):  # inserts, deletes and overwrites
        at = rnd.randint(0, len(new))
        kind = rnd.randint(0, 2)
        if kind == 0:
            new[at:at] = rnd.randbytes(rnd.randint(1, 300))
        elif kind == 1:
            del new[at:at + rnd.randint(1, 300)]
        else:
            new[at:at + 50] = rnd.randbytes(50)
    mods = [native.get_backend(b) for b in BACKENDS]
    strong = 1 + seed % fmt.STRONG_MAX[fmt.SIG_MAGICS[magic][1]]
    sigs = {make_signature(basis, block, strong, magic, m, cuts) for m in mods}
    assert len(sigs) == 1
    sig = sigs.pop()
    deltas = {make_delta(sig, bytes(new), m, cuts[::-1]) for m in mods}
    assert len(deltas) == 1
    delta = deltas.pop()
    for m in mods:
        assert apply_delta(basis, delta, m, cuts) == new


# Loading hostile signatures ----------------------------------------------

def header(magic: int, block_len: int, strong_len: int) -> bytes:
    return b"".join(v.to_bytes(4, "big") for v in (magic, block_len, strong_len))


def test_signature_header_checks(backend: ModuleType) -> None:
    def load_sig(data: bytes, **kw: int) -> Signature:
        return Signature.from_bytes(data, backend=backend, **kw)

    with pytest.raises(BadMagicError, match="unknown magic number 0x12345678"):
        load_sig(header(0x12345678, 256, 8))
    with pytest.raises(BadMagicError, match="is a delta"):
        load_sig(header(fmt.DELTA_MAGIC, 256, 8))
    with pytest.raises(CorruptError, match="block length 0"):
        load_sig(header(rsync.DEFAULT_MAGIC, 0, 8))
    with pytest.raises(LimitError, match="block length 4294967295"):
        load_sig(header(rsync.DEFAULT_MAGIC, 0xFFFFFFFF, 8))
    with pytest.raises(CorruptError, match="strong sum length 17 exceeds 16"):
        load_sig(header(rsync.MD4_SIG_MAGIC, 256, 17))
    with pytest.raises(TruncatedError, match="header truncated .5 of 12"):
        load_sig(header(rsync.DEFAULT_MAGIC, 256, 8)[:5])
    with pytest.raises(TruncatedError, match="header truncated .0 of 12"):
        load_sig(b"")
    with pytest.raises(TruncatedError, match="inside a block record .3 of 12"):
        load_sig(header(rsync.DEFAULT_MAGIC, 256, 8) + bytes(24 + 3))
    with pytest.raises(LimitError, match="limit of 100 bytes"):
        load_sig(header(rsync.DEFAULT_MAGIC, 256, 8) + bytes(12 * 8), max_size=100)
    ok = load_sig(header(rsync.DEFAULT_MAGIC, 256, 8) + bytes(12 * 7), max_size=100)
    assert ok.block_count == 7 and ok.memory > 0


def test_strong_len_zero_means_maximum(backend: ModuleType) -> None:
    basis = os.urandom(1000)
    sig = make_signature(basis, 256, 32, rsync.DEFAULT_MAGIC, backend)
    patched = sig[:8] + bytes(4) + sig[12:]
    loaded = Signature.from_bytes(patched, backend=backend)
    assert loaded.params is not None and loaded.params.strong_len == 32
    assert make_delta(patched, basis, backend) == make_delta(sig, basis, backend)


def test_signature_misuse(backend: ModuleType) -> None:
    sig = Signature(backend=backend)
    with pytest.raises(rsync.RsyncError, match="finish"):
        DeltaWriter(sig)
    sig.update(header(rsync.DEFAULT_MAGIC, 256, 8))
    sig.finish()
    assert sig.finish() is sig
    with pytest.raises(rsync.RsyncError, match="after finish"):
        sig.update(b"x")


# Patching hostile deltas -------------------------------------------------

@pytest.mark.parametrize(("delta", "error", "message"), [
    (b"rs\x026\x55", CorruptError, "reserved opcode 0x55 at byte 4"),
    (b"rs\x026\xff", CorruptError, "reserved opcode 0xff at byte 4"),
    (b"rs\x026\x03ab", TruncatedError, "without an END"),
    (b"rs\x026\x03abc", TruncatedError, "after 8 bytes"),
    (b"rs\x026", TruncatedError, "without an END"),
    (b"", TruncatedError, "without an END"),
    (b"rs\x027\x00", BadMagicError, "byte 3 differs"),
    (b"RS\x026\x00", BadMagicError, "byte 0 differs"),
    (b"rs\x026\x41\x00", CorruptError, "LITERAL of length 0"),
    (b"rs\x026\x45\x00\x00", CorruptError, "COPY with zero length"),
    (b"rs\x026\x54" + (1 << 63).to_bytes(8, "big") + (1).to_bytes(8, "big"), CorruptError,
     "2\\^63"),
    (b"rs\x026\x45\x00\x65", CorruptError, "runs past the end of the basis .100 bytes"),
    (b"rs\x026\x46\x00\x00\x64\x45\x64\x01\x00", CorruptError, "offset 100 runs past"),
    (b"rs\x026\x44" + (1 << 62).to_bytes(8, "big") + b"abc", TruncatedError, "without an END"),
    (b"rs\x026\x54" + (50).to_bytes(8, "big") + (1 << 62).to_bytes(8, "big"), CorruptError,
     "runs past"),
])
def test_corrupt_deltas_fail_cleanly(backend: ModuleType, delta: bytes, error: type,
                                     message: str) -> None:
    basis = bytes(range(100))
    with pytest.raises(error, match=message):
        apply_delta(basis, delta, backend)
    with pytest.raises(error, match=message):
        apply_delta(basis, delta, backend, [1])


def test_bytes_after_end_are_ignored(backend: ModuleType) -> None:
    basis = bytes(range(100))
    assert apply_delta(basis, b"rs\x026\x45\x0a\x05\x02hi\x00garbage\xff", backend) == \
        bytes(range(10, 15)) + b"hi"


def test_max_output_limits_copy_bombs(backend: ModuleType) -> None:
    basis = bytes(1000)
    bomb = b"rs\x026" + b"\x46\x00\x03\xe8" * 1000 + b"\x00"  # 1000 x COPY(0, 1000)
    p = Patcher(io.BytesIO(basis), max_output=50_000, backend=backend)
    with pytest.raises(LimitError, match="50000"):
        for _ in p.update(bomb):
            pass
    assert p.written <= 51_000


def test_patcher_requires_consumed_output(backend: ModuleType) -> None:
    p = Patcher(io.BytesIO(b"abc"), backend=backend)
    first = p.update(b"rs\x026\x01x\x01y")
    next(first)
    with pytest.raises(RuntimeError, match="not consumed"):
        next(p.update(b"\x00"))
    assert list(first) == [b"y"]


def test_file_helpers_round_trip_and_atomic_output(backend: ModuleType, tmp_path) -> None:
    basis, new = os.urandom(200_000), os.urandom(1000)
    new = basis[:50_000] + new + basis[60_000:]
    (tmp_path / "old").write_bytes(basis)
    (tmp_path / "new").write_bytes(new)
    params = rsync.signature_file(tmp_path / "old", tmp_path / "sig", backend=backend)
    assert (params.block_len, params.strong_len) == (384, 32)
    stats = rsync.delta_file(tmp_path / "sig", tmp_path / "new", tmp_path / "delta",
                             backend=backend)
    assert stats.literal_bytes < 2000 and stats.copy_bytes > len(new) - 2000
    (tmp_path / "out").write_bytes(b"previous content")
    assert rsync.patch_file(tmp_path / "old", tmp_path / "delta", tmp_path / "out",
                            backend=backend) == len(new)
    assert (tmp_path / "out").read_bytes() == new
    # A failing patch leaves the target as it was and no temp file behind.
    (tmp_path / "bad").write_bytes((tmp_path / "delta").read_bytes()[:-1])
    with pytest.raises(TruncatedError):
        rsync.patch_file(tmp_path / "old", tmp_path / "bad", tmp_path / "out", backend=backend)
    assert (tmp_path / "out").read_bytes() == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "delta", "new", "old", "out",
                                                          "sig"]


def test_feed_matches_update(backend: ModuleType) -> None:
    basis = os.urandom(600_000)  # COPYs longer than the reused 256 KiB piece buffer
    new = basis[:300_000] + b"x" * 100 + basis[290_000:]
    delta = make_delta(make_signature(basis, 1024, 16, rsync.DEFAULT_MAGIC, backend), new,
                       backend)
    p = Patcher(io.BytesIO(basis), backend=backend)
    out = bytearray()
    for chunk in chunked(delta, [7, 1000]):
        p.feed(chunk, out.extend)
    p.finish()
    assert out == new == apply_delta(basis, delta, backend, [7, 1000])
    assert p.written == len(new)
