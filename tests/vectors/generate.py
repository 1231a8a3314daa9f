"""Regenerate the known-answer vectors in this folder (run by hand, not by pytest).

The answers come from independent implementations, never from csembed:

* weak sums and MD4/BLAKE2b-256 block hashes: ``rdiff signature -b LEN`` of a
  file holding exactly the input, so the signature's single record carries
  librsync's own values;
* BLAKE2b at every digest length: :func:`hashlib.blake2b`;
* MD4: the RFC 1320 appendix A.5 test suite (typed in below) plus rdiff;
* ``rsync.json``: ``rdiff signature`` (all four formats, several ``-b``/``-S``)
  and ``rdiff delta`` of small deterministic files, plus the delta hexdump
  from the librsync facts sheet (``/work/shared/reference/librsync-formats.md``).

Inputs are described, not stored, when large: ``{"hex": ...}``,
``{"repeat_hex": "ff", "count": N}`` or ``{"random_seed": S, "length": N}``
(bytes from ``random.Random(S).randbytes(N)``); see ``tests/vectors/__init__.py``.

Usage: ``python tests/vectors/generate.py`` (needs ``rdiff`` on PATH).
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

RFC1320 = [
    ("", "31d6cfe0d16ae931b73c59d7e0c089c0"),
    ("a", "bde52cb31de33e46245e05fbdbd6fb24"),
    ("abc", "a448017aaf21d8525fc10ae87aa6729d"),
    ("message digest", "d9130a8164549fe818874806e1c7014b"),
    ("abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
    ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
     "043f8582f241db351ce627e153e7f0e4"),
    ("1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536"),
]


def materialize(spec: dict) -> bytes:
    if "hex" in spec:
        return bytes.fromhex(spec["hex"])
    if "repeat_hex" in spec:
        return bytes.fromhex(spec["repeat_hex"]) * spec["count"]
    return random.Random(spec["random_seed"]).randbytes(spec["length"])


def inputs() -> list[dict]:
    specs: list[dict] = [{"hex": b"Hello, librsync!".hex()}, {"hex": "00"}, {"hex": "ff"}]
    specs += [{"repeat_hex": "00", "count": n} for n in (2, 31, 4096)]
    specs += [{"repeat_hex": "ff", "count": n} for n in (3, 65537, 300000)]
    specs += [{"random_seed": n, "length": n} for n in
              (1, 2, 3, 4, 5, 7, 8, 55, 56, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000,
               4099, 70000)]
    return specs


def rdiff_record(data: bytes, *flags: str) -> tuple[int, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        basis, sig = Path(tmp, "basis"), Path(tmp, "sig")
        basis.write_bytes(data)
        subprocess.run(["rdiff", "-b", str(len(data)), *flags, "signature", str(basis), str(sig)],
                       check=True)
        raw = sig.read_bytes()
    return int.from_bytes(raw[12:16], "big"), raw[16:]


def weak_and_block_hashes() -> list[dict]:
    out = []
    for spec in inputs():
        data = materialize(spec)
        rk, b2 = rdiff_record(data)
        rs, md = rdiff_record(data, "-R", "rollsum", "-H", "md4")
        out.append({"input": spec, "length": len(data), "rollsum": rs, "rabinkarp": rk,
                    "md4": md.hex(), "blake2b_256": b2.hex()})
    return out


def blake2b_vectors() -> list[dict]:
    out = []
    for n in (0, 1, 3, 64, 127, 128, 129, 255, 256, 257, 1000, 1024):
        data = random.Random(1000 + n).randbytes(n)
        out.append({"input": {"random_seed": 1000 + n, "length": n},
                    "digests": {str(size): hashlib.blake2b(data, digest_size=size).hexdigest()
                                for size in range(1, 65)}})
    return out


def rsync_cases() -> list[dict]:
    rnd = random.Random(2024)
    basis = rnd.randbytes(3000)
    new = basis[:700] + b"inserted!" + basis[700:1900] + basis[2100:] + rnd.randbytes(77)
    files = {"basis": basis, "new": new, "empty": b"", "one": b"\x7f"}
    out = []
    options = [(), ("-b", "256"), ("-b", "1000", "-S", "8"), ("-b", "100", "-S", "-1"),
               ("-H", "md4"), ("-R", "rollsum"), ("-H", "md4", "-R", "rollsum", "-b", "512"),
               ("-H", "md4", "-R", "rollsum", "-b", "64", "-S", "3")]
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            Path(tmp, name).write_bytes(data)
        for basis_name in ("basis", "empty", "one"):
            for opts in options:
                sig, delta = Path(tmp, "sig"), Path(tmp, "delta")
                subprocess.run(["rdiff", "-f", *opts, "signature", str(Path(tmp, basis_name)),
                                str(sig)], check=True, capture_output=True)
                subprocess.run(["rdiff", "-f", "delta", str(sig), str(Path(tmp, "new")),
                                str(delta)], check=True)
                out.append({"basis": basis_name, "new": "new", "options": list(opts),
                            "signature": sig.read_bytes().hex(),
                            "rdiff_delta": delta.read_bytes().hex()})
    return out


def facts_sheet_delta() -> dict:
    basis = random.Random(7).randbytes(1024)
    new = basis[:512] + b"HELLO" + basis[512:] + b"Z" * 70
    delta = ("72730236" "46000200" "0548454c4c4f" "4a02000200" "4146" + "5a" * 70 + "00")
    return {"basis": {"random_seed": 7, "length": 1024},
            "new_layout": "basis[:512] + b'HELLO' + basis[512:] + b'Z' * 70",
            "new": new.hex(), "block_len": 256, "delta": delta}


def main() -> None:
    empty = {"input": {"hex": ""}, "length": 0, "rollsum": 0, "rabinkarp": 1,
             "md4": RFC1320[0][1], "blake2b_256": hashlib.blake2b(b"", digest_size=32).hexdigest()}
    doc = {
        "about": "weak sums and strong block hashes as rdiff 2.3.2 writes them (see generate.py); "
                 "the empty input is defined (rollsum 0, Rabin-Karp seed 1), not from rdiff",
        "vectors": [empty, *weak_and_block_hashes()],
    }
    (HERE / "weaksums.json").write_text(json.dumps(doc, indent=1) + "\n")
    md4_doc = {"about": "MD4 test suite of RFC 1320 appendix A.5",
               "vectors": [{"input": {"hex": m.encode().hex()}, "md4": d} for m, d in RFC1320]}
    (HERE / "md4.json").write_text(json.dumps(md4_doc, indent=1) + "\n")
    b2_doc = {"about": "hashlib.blake2b(data, digest_size=N) for N = 1..64",
              "vectors": blake2b_vectors()}
    (HERE / "blake2b.json").write_text(json.dumps(b2_doc, indent=1) + "\n")
    rsync_doc = {
        "about": "rdiff 2.3.2 signatures (options as listed) and deltas of small files, "
                 "inputs from random.Random(2024) as in generate.py; 'facts_sheet' is the "
                 "delta hexdump of the librsync facts sheet (basis random.Random(7))",
        "inputs": {"seed": 2024},
        "cases": rsync_cases(),
        "facts_sheet": facts_sheet_delta(),
    }
    (HERE / "rsync.json").write_text(json.dumps(rsync_doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
