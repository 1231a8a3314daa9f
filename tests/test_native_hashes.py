"""Weak sums, BLAKE2b and MD4: known answers and agreement between backends.

Every test runs once per backend in this process (``backend`` fixture), so the
C code and its pure-Python twin face the same vectors; the hypothesis tests
also pit the two against each other on random data.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import load, materialize

import csembed.native as native
from csembed.native import pure

BACKENDS = native.available_backends()
WEAK = ("RollSum", "RabinKarp")


@pytest.fixture(params=["c", "python"])
def backend(request: pytest.FixtureRequest) -> ModuleType:
    if request.param not in BACKENDS:
        pytest.skip("C extension csembed._native is not built")
    return native.get_backend(request.param)


def other_backend() -> ModuleType:
    """The C backend when built (cross-checks then compare C with pure)."""
    return native.get_backend("c") if "c" in BACKENDS else pure


# Known answers --------------------------------------------------------------

def test_facts_sheet_example(backend: ModuleType) -> None:
    data = b"Hello, librsync!"
    assert backend.rollsum(data) == 0x416107B7
    assert backend.rabinkarp(data) == 0xB61BDCF0
    assert backend.blake2b(data).hex().startswith("e44cdf84")
    assert backend.blake2b(data).hex().endswith("ad251f2b")


@pytest.mark.parametrize("vector", load("weaksums")["vectors"],
                         ids=lambda v: f"len{v['length']}")
def test_weak_sums_and_block_hashes_match_rdiff(backend: ModuleType, vector: dict) -> None:
    data = materialize(vector["input"])
    if backend is pure and len(data) > 5000:
        data_for_strong = None  # pure BLAKE2b/MD4 are slow; sums only
    else:
        data_for_strong = data
    assert backend.rollsum(data) == vector["rollsum"]
    assert backend.rabinkarp(data) == vector["rabinkarp"]
    if data_for_strong is not None:
        assert backend.md4(data).hex() == vector["md4"]
        assert backend.blake2b(data).hex() == vector["blake2b_256"]


@pytest.mark.parametrize("vector", load("md4")["vectors"], ids=lambda v: v["md4"][:8])
def test_md4_rfc1320(backend: ModuleType, vector: dict) -> None:
    data = materialize(vector["input"])
    assert backend.md4(data).hex() == vector["md4"]
    h = backend.MD4()
    for i in range(len(data)):
        h.update(data[i:i + 1])
    assert h.hexdigest() == vector["md4"]


@pytest.mark.parametrize("vector", load("blake2b")["vectors"],
                         ids=lambda v: f"len{v['input']['length']}")
def test_blake2b_every_digest_length(backend: ModuleType, vector: dict) -> None:
    data = materialize(vector["input"])
    for size, expected in vector["digests"].items():
        assert backend.blake2b(data, int(size)).hex() == expected
    # Incremental, in uneven pieces that straddle block boundaries.
    h = backend.Blake2b(digest_size=64)
    for start in range(0, len(data), 37):
        h.update(data[start:start + 37])
    assert h.hexdigest() == vector["digests"]["64"]


# Incremental and rolling behaviour -----------------------------------------

@pytest.mark.parametrize("kind", WEAK)
def test_update_in_pieces_equals_one_shot(backend: ModuleType, kind: str) -> None:
    data = os.urandom(1000)
    whole = getattr(backend, kind)(data)
    for cut in (0, 1, 3, 4, 5, 500, 999, 1000):
        s = getattr(backend, kind)(data[:cut])
        s.update(data[cut:])
        assert s.digest() == whole.digest()
        assert s.count == 1000


@pytest.mark.parametrize("kind", WEAK)
def test_rotate_roll_rollin_rollout(backend: ModuleType, kind: str) -> None:
    data = bytes(range(256)) * 3 + os.urandom(300)
    cls = getattr(backend, kind)
    n = 64
    s = cls(data[:n])
    for i in range(len(data) - n):
        s.rotate(data[i], data[i + n])
        assert s.digest() == cls(data[i + 1:i + 1 + n]).digest()
    bulk = cls(data[:n])
    bulk.roll(memoryview(data)[:len(data) - n], memoryview(data)[n:])
    assert bulk.digest() == s.digest()
    grown = cls(data[:10])
    for b in data[10:n]:
        grown.rollin(b)
    assert grown.digest() == cls(data[:n]).digest()
    shrink = cls(data[:n])
    for i in range(n):
        shrink.rollout(data[i])
        assert shrink.digest() == cls(data[i + 1:n]).digest()
        assert shrink.count == n - i - 1
    with pytest.raises(ValueError, match="empty window"):
        shrink.rollout(0)


@pytest.mark.parametrize("kind", WEAK)
def test_copy_is_independent(backend: ModuleType, kind: str) -> None:
    s = getattr(backend, kind)(b"abcdef")
    c = s.copy()
    c.update(b"x")
    assert s.digest() == getattr(backend, kind)(b"abcdef").digest()
    assert c.digest() == getattr(backend, kind)(b"abcdefx").digest()


def test_misuse_is_rejected(backend: ModuleType) -> None:
    for size in (0, 65, -1):
        with pytest.raises(ValueError, match="digest_size"):
            backend.Blake2b(digest_size=size)
        with pytest.raises(ValueError, match="digest_size"):
            backend.blake2b(b"", size)
    with pytest.raises(ValueError, match="equal lengths"):
        backend.RollSum(b"abc").roll(b"ab", b"abc")
    with pytest.raises(ValueError, match="equal lengths"):
        backend.RabinKarp(b"abc").roll(b"ab", b"a")


def test_digest_does_not_end_hashing(backend: ModuleType) -> None:
    for cls, ref in ((backend.MD4, pure.md4), (backend.Blake2b, pure.blake2b)):
        h = cls(b"part one ")
        h.digest()
        h2 = h.copy()
        h.update(b"part two")
        assert h.digest() == ref(b"part one part two")
        assert h2.digest() == ref(b"part one ")


def test_accepts_bytearray_and_memoryview(backend: ModuleType) -> None:
    data = bytes(range(200))
    for form in (bytearray(data), memoryview(data)):
        assert backend.rollsum(form) == backend.rollsum(data)
        assert backend.rabinkarp(form) == backend.rabinkarp(data)
        assert backend.md4(form) == backend.md4(data)
        assert backend.blake2b(form, 20) == hashlib.blake2b(data, digest_size=20).digest()


# Property tests: backends agree, rolling equals one-shot -------------------

@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600), window=st.integers(1, 80))
def test_rolling_window_equals_one_shot_both_backends(data: bytes, window: int) -> None:
    if len(data) <= window:
        data = data + bytes(window + 1 - len(data))
    for mod in {pure, other_backend()}:
        for kind in WEAK:
            cls = getattr(mod, kind)
            s = cls(data[:window])
            s.roll(data[:len(data) - window], data[window:])
            assert s.digest() == cls(data[len(data) - window:]).digest()


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=700), cut=st.integers(0, 700), size=st.integers(1, 64))
def test_backends_agree(data: bytes, cut: int, size: int) -> None:
    c = other_backend()
    assert c.rollsum(data) == pure.rollsum(data)
    assert c.rabinkarp(data) == pure.rabinkarp(data)
    assert c.md4(data) == pure.md4(data)
    assert c.blake2b(data, size) == pure.blake2b(data, size)
    assert c.blake2b(data, size) == hashlib.blake2b(data, digest_size=size).digest()
    h = c.Blake2b(data[:cut], size)
    h.update(data[cut:])
    assert h.digest() == c.blake2b(data, size)
    m = c.MD4(data[:cut])
    m.update(data[cut:])
    assert m.digest() == pure.md4(data)


@pytest.mark.skipif("c" not in BACKENDS, reason="C extension not built")
def test_four_way_blake2b_matches_hashlib() -> None:
    """The multi-buffer BLAKE2b used for signatures, on every implementation this CPU has."""
    from csembed._native import ffi, lib

    rnd = random.Random(4)
    try:
        for want in (lib.CS_X4_SCALAR, lib.CS_X4_AVX2):
            got = lib.cs_blake2b_x4_select(want)
            for length in (0, 1, 127, 128, 129, 256, 1000, 4096):
                msgs = [rnd.randbytes(length) for _ in range(4)]
                bufs = [ffi.from_buffer("uint8_t[]", m) for m in msgs]
                outs = [ffi.new("uint8_t[64]") for _ in range(4)]
                for size in (1, 16, 32, 64):
                    assert lib.cs_blake2b_x4(bufs, length, size, outs) == lib.CS_OK
                    for m, o in zip(msgs, outs, strict=True):
                        expected = hashlib.blake2b(m, digest_size=size).digest()
                        assert bytes(ffi.buffer(o, size)) == expected, (got, length, size)
            assert lib.cs_blake2b_x4(bufs, 0, 65, outs) == lib.CS_ERR_PARAM
    finally:
        lib.cs_blake2b_x4_select(lib.CS_X4_AUTO)


# Backend selection -----------------------------------------------------------

def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "CSEMBED_BACKEND"} | env
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full_env, timeout=60, check=True)


def test_env_forces_python_backend() -> None:
    out = _run("import csembed.native as n; print(n.BACKEND, n.RollSum.__module__)",
               CSEMBED_BACKEND="python")
    assert out.stdout.split() == ["python", "csembed.native.pure.weaksums"]
    assert out.stderr == ""


@pytest.mark.skipif("c" not in BACKENDS, reason="C extension not built")
def test_default_is_c_when_built() -> None:
    assert _run("import csembed.native as n; print(n.BACKEND)").stdout.strip() == "c"


def test_missing_extension_falls_back_loudly() -> None:
    code = """
        import sys, warnings
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "csembed._native":
                    raise ImportError("blocked for the test")
        sys.meta_path.insert(0, Block())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import csembed.native as n
        print(n.BACKEND, n.rollsum(b"Hello, librsync!") == 0x416107B7)
        print(any("pure-Python backend" in str(w.message) for w in caught))
    """
    out = _run(code)
    assert out.stdout.split() == ["python", "True", "True"]
    assert "WARNING" in out.stderr and "blocked for the test" in out.stderr
