"""Interoperability with the real ``rdiff`` (librsync 2.3), both directions.

For files of many sizes (empty, one byte, shorter than a block, exact block
multiples, ragged tails, and 50 MiB on the C backend) and every signature
format: our signature must be byte-identical to ``rdiff signature`` with the
same options; ``rdiff patch`` must rebuild the new file from our delta; our
patcher must rebuild it from ``rdiff delta``'s.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import csembed.native as native
from csembed import rsync

pytestmark = pytest.mark.skipif(shutil.which("rdiff") is None, reason="rdiff not installed")
BACKENDS = native.available_backends()

SIZES = [0, 1, 100, 255, 256, 257, 1024, 4096 + 13, 65536, 70001, 300_000]
OPTIONS = [(), ("-b", "300", "-S", "8"), ("-H", "md4", "-R", "rollsum"),
           ("-R", "rollsum", "-S", "-1"), ("-H", "md4", "-b", "1000", "-S", "-1")]
TINY_OPTIONS = [("-b", "1", "-S", "2"), ("-b", "7", "-H", "md4", "-R", "rollsum")]
PURE_MAX = 70001  # the pure backend scans in Python: keep its files small


@pytest.fixture(params=["c", "python"])
def backend(request: pytest.FixtureRequest) -> ModuleType:
    if request.param not in BACKENDS:
        pytest.skip("C extension csembed._native is not built")
    return native.get_backend(request.param)


def rdiff(*args: str | Path) -> None:
    subprocess.run(["rdiff", "-f", *map(str, args)], check=True, capture_output=True,
                   timeout=300)


def edited(basis: bytes, rnd: random.Random) -> bytes:
    """``basis`` with a few inserts, deletes and overwrites (about 1% changed)."""
    new = bytearray(basis)
    for _ in range(rnd.randint(1, 6)):
        at = rnd.randint(0, len(new))
        span = max(1, len(new) // 300)
        kind = rnd.randint(0, 2)
        if kind == 0:
            new[at:at] = rnd.randbytes(rnd.randint(1, span))
        elif kind == 1:
            del new[at:at + rnd.randint(1, span)]
        else:
            new[at:at + span] = rnd.randbytes(span)
    return bytes(new)


def parse_options(opts: tuple[str, ...]) -> dict[str, Any]:
    names = {"-b": "block_len", "-S": "strong_len", "-H": "hash", "-R": "rollsum"}
    kw: dict[str, Any] = {}
    for flag, value in zip(opts[::2], opts[1::2], strict=True):
        kw[names[flag]] = int(value) if flag in ("-b", "-S") else value
    return kw


def check_interop(tmp: Path, basis: bytes, new: bytes, opts: tuple[str, ...],
                  backend: ModuleType, same_delta: bool = False) -> None:
    old_f, new_f = tmp / "old", tmp / "new"
    old_f.write_bytes(basis)
    new_f.write_bytes(new)
    rdiff(*opts, "signature", old_f, tmp / "sig.rdiff")
    rsync.signature_file(old_f, tmp / "sig.ours", backend=backend, **parse_options(opts))
    assert (tmp / "sig.ours").read_bytes() == (tmp / "sig.rdiff").read_bytes()

    rsync.delta_file(tmp / "sig.rdiff", new_f, tmp / "delta.ours", backend=backend)
    rdiff("patch", old_f, tmp / "delta.ours", tmp / "new.by-rdiff")
    assert (tmp / "new.by-rdiff").read_bytes() == new

    rdiff("delta", tmp / "sig.rdiff", new_f, tmp / "delta.rdiff")
    rsync.patch_file(old_f, tmp / "delta.rdiff", tmp / "new.by-ours", backend=backend)
    assert (tmp / "new.by-ours").read_bytes() == new
    # Ours should be at least as compact as rdiff's; on data without repeated
    # blocks our encoder makes exactly rdiff's choices (same greedy search,
    # integer widths, literal splitting and COPY merging).
    ours, theirs = (tmp / "delta.ours").read_bytes(), (tmp / "delta.rdiff").read_bytes()
    assert len(ours) <= len(theirs)
    if same_delta:
        assert ours == theirs


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "".join(o) or "default")
def test_interop(tmp_path: Path, backend: ModuleType, size: int, opts: tuple[str, ...]) -> None:
    if backend is native.pure and size > PURE_MAX:
        pytest.skip("pure backend: small files only")
    rnd = random.Random(size * 31 + len(opts))
    basis = rnd.randbytes(size)
    check_interop(tmp_path, basis, edited(basis, rnd) if size else rnd.randbytes(10), opts,
                  backend, same_delta=True)


@pytest.mark.parametrize("size", [0, 1, 2, 7, 8, 50])
@pytest.mark.parametrize("opts", TINY_OPTIONS, ids=lambda o: "".join(o))
def test_interop_tiny_blocks(tmp_path: Path, backend: ModuleType, size: int,
                             opts: tuple[str, ...]) -> None:
    rnd = random.Random(size)
    basis = rnd.randbytes(size)
    check_interop(tmp_path, basis, basis[size // 2:] + basis[: size // 2] + b"x", opts, backend)


def test_unrelated_and_identical_files(tmp_path: Path, backend: ModuleType) -> None:
    rnd = random.Random(9)
    basis = rnd.randbytes(40_000)
    check_interop(tmp_path, basis, rnd.randbytes(40_000), (), backend)
    check_interop(tmp_path, basis, basis, ("-b", "512"), backend)
    check_interop(tmp_path, bytes(40_000), bytes(39_999), ("-b", "256"), backend)  # 73 vs 693 B


@pytest.mark.skipif("c" not in BACKENDS, reason="C extension not built")
def test_interop_50_mib_c_backend(tmp_path: Path) -> None:
    rnd = random.Random(50)
    basis = rnd.randbytes(50 << 20)
    new = bytearray(basis)
    for _ in range(40):  # runs of changes, inserts and deletes spread over the file
        at = rnd.randrange(len(new))
        new[at:at + rnd.randint(1, 3000)] = rnd.randbytes(rnd.randint(0, 3000))
    check_interop(tmp_path, basis, bytes(new), (), native.get_backend("c"), same_delta=True)
