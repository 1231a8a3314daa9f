"""``csembed rdiff`` as a script uses it: real subprocesses, side by side with real ``rdiff``.

Same arguments must give byte-identical signatures, deltas that rdiff can
apply (and the other way round), and the same exit status on failures.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("rdiff") is None, reason="rdiff not installed")


def ours(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "csembed", "rdiff", *map(str, args)],
                          input=stdin, capture_output=True, timeout=120)


def theirs(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["rdiff", *map(str, args)], input=stdin, capture_output=True,
                          timeout=120)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    rnd = random.Random(11)
    basis = rnd.randbytes(150_000)
    new = basis[:40_000] + rnd.randbytes(3000) + basis[41_000:120_000] + basis[125_000:]
    (tmp_path / "old").write_bytes(basis)
    (tmp_path / "new").write_bytes(new)
    return tmp_path


@pytest.mark.parametrize("opts", [(), ("-b", "512", "-S", "-1"), ("-H", "md4", "-R", "rollsum"),
                                  ("--block-size=1000", "--sum-size=6", "--hash=md4")],
                         ids=lambda o: "".join(o) or "default")
def test_signature_identical_to_rdiff(files: Path, opts: tuple[str, ...]) -> None:
    assert ours(*opts, "signature", files / "old", files / "s.ours").returncode == 0
    assert theirs(*opts, "signature", files / "old", files / "s.rdiff").returncode == 0
    assert (files / "s.ours").read_bytes() == (files / "s.rdiff").read_bytes()


def test_pipes_and_options_after_the_action(files: Path) -> None:
    basis = (files / "old").read_bytes()
    piped = ours("signature", "-b", "700", "-", "-", stdin=basis)
    assert piped.returncode == 0
    assert piped.stdout == theirs("-b", "700", "signature", stdin=basis).stdout
    # Unknown size (a pipe): rdiff's defaults are 2048-byte blocks, full strong sums.
    assert ours("signature", stdin=basis).stdout == theirs("signature", stdin=basis).stdout
    assert ours("signature", stdin=basis).stdout[4:12] == bytes.fromhex("0000080000000020")


def test_delta_and_patch_interoperate(files: Path) -> None:
    new = (files / "new").read_bytes()
    assert theirs("signature", files / "old", files / "sig").returncode == 0
    r = ours("-s", "delta", files / "sig", files / "new", files / "d.ours")
    assert r.returncode == 0 and b"delta statistics" in r.stderr
    assert theirs("patch", files / "old", files / "d.ours", files / "n1").returncode == 0
    assert (files / "n1").read_bytes() == new
    assert theirs("delta", files / "sig", files / "new", files / "d.rdiff").returncode == 0
    assert ours("patch", files / "old", files / "d.rdiff", files / "n2").returncode == 0
    assert (files / "n2").read_bytes() == new
    # Delta from stdin to stdout, patch from stdin to stdout.
    d = ours("delta", files / "sig", stdin=new)
    assert d.returncode == 0 and d.stdout == (files / "d.ours").read_bytes()
    p = ours("patch", files / "old", "-", "-", stdin=d.stdout)
    assert p.returncode == 0 and p.stdout == new


def failure_cases(files: Path) -> list[tuple[str, list[str | Path], bytes | None]]:
    assert theirs("signature", files / "old", files / "sig").returncode == 0
    assert theirs("delta", files / "sig", files / "new", files / "delta").returncode == 0
    delta = (files / "delta").read_bytes()
    (files / "truncated").write_bytes(delta[:-1])
    (files / "reserved").write_bytes(b"rs\x026\x55")
    (files / "badmagic").write_bytes(b"xs\x026\x00")
    (files / "shortsig").write_bytes(b"rs\x01G\x00\x00")
    (files / "exists").write_bytes(b"keep me")
    return [
        ("truncated delta", ["patch", files / "old", files / "truncated", files / "out"], None),
        ("reserved opcode", ["patch", files / "old", files / "reserved", files / "out"], None),
        ("bad delta magic", ["patch", files / "old", files / "badmagic", files / "out"], None),
        ("truncated signature", ["delta", files / "shortsig", files / "new", files / "out"],
         None),
        ("output exists", ["signature", files / "old", files / "exists"], None),
        ("strong sum too long", ["-S", "40", "signature", files / "old", files / "out"], None),
        ("unknown hash", ["-H", "sha1", "signature", files / "old", files / "out"], None),
        ("too many names", ["signature", files / "old", files / "a", files / "b"], None),
        ("missing input", ["signature", files / "nonexistent", files / "out"], None),
        ("empty delta on stdin", ["patch", files / "old"], b""),
    ]


def test_failures_exit_like_rdiff_and_leave_no_output(files: Path) -> None:
    for name, args, stdin in failure_cases(files):
        mine = ours(*args, stdin=stdin)
        assert not (files / "out").exists(), name
        ref = theirs(*args, stdin=stdin)
        (files / "out").unlink(missing_ok=True)  # rdiff may leave a partial file behind
        assert ref.returncode != 0, name
        assert mine.returncode == ref.returncode, (name, mine.stderr)
        assert mine.stderr.startswith((b"csembed rdiff:", b"usage:")), name
    assert (files / "exists").read_bytes() == b"keep me"
    assert not list(files.glob("*.!clearsky"))


def test_force_overwrites(files: Path) -> None:
    (files / "sig").write_bytes(b"old content")
    assert ours("signature", files / "old", files / "sig").returncode == 100
    assert ours("-f", "signature", files / "old", files / "sig").returncode == 0
    assert (files / "sig").read_bytes()[:4] == b"rs\x01G"


def test_listed_in_csembed_help() -> None:
    out = subprocess.run([sys.executable, "-m", "csembed", "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "rdiff" in out
    usage = subprocess.run([sys.executable, "-m", "csembed", "rdiff", "--help"],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    for flag in ("-b", "-S", "-H", "-R", "-f", "signature [BASIS [SIGNATURE]]"):
        assert flag in usage
