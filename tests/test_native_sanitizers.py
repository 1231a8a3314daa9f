"""Memory-safety run of the C rsync engine under AddressSanitizer and UBSan (opt-in).

Not part of the normal suite (it needs gcc and takes a few seconds): run it
with ``CSEMBED_SANITIZE=1 pytest tests/test_native_sanitizers.py``. It builds
``native/*.c`` together with the harness below with
``-fsanitize=address,undefined`` and runs it: random bases, signatures of
all four formats fed in random chunks, deltas produced with random output
buffer sizes and decoded back, and random garbage fed to the patch decoder.
Any out-of-bounds access, leak, or undefined behaviour fails the test.

To run the Python test suite itself against a sanitized extension, build a
copy of the tree with ``CFLAGS="-fsanitize=address,undefined"`` and run pytest
with ``LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc
-print-file-name=libubsan.so)" ASAN_OPTIONS=detect_leaks=0`` and that copy on
``PYTHONPATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parent.parent / "native"

pytestmark = [
    pytest.mark.skipif(os.environ.get("CSEMBED_SANITIZE") != "1",
                       reason="opt-in: set CSEMBED_SANITIZE=1"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc"),
]

HARNESS = r"""
/* Lifecycle + random-input harness for the rsync C engine under ASan/LSan. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sigwriter.h"
#include "sumset.h"
#include "delta.h"
#include "patch.h"
static uint8_t out[1 << 20];
int main(void) {
    srand(7);
    for (int iter = 0; iter < 300; iter++) {
        size_t n = (size_t)(rand() % 50000), bl = 1 + (size_t)(rand() % 700);
        uint8_t *basis = malloc(n + 1), *nw = malloc(n + 100);
        for (size_t i = 0; i < n; i++) basis[i] = (uint8_t)(rand() % 4);
        memcpy(nw, basis, n);
        for (int k = 0; k < 5 && n; k++) nw[rand() % n] ^= 1;
        uint32_t magic = (uint32_t[]){0x72730136, 0x72730137, 0x72730146, 0x72730147}[iter % 4];
        cs_sigwriter *w; size_t olen, total = 0;
        if (cs_sigwriter_new(magic, (uint32_t)bl, 8, &w) != CS_OK) return 1;
        uint8_t *sig = malloc(cs_sigwriter_bound(w, n) + 64);
        for (size_t off = 0; off < n;) {
            size_t c = 1 + (size_t)(rand() % 9000); if (c > n - off) c = n - off;
            cs_sigwriter_feed(w, basis + off, c, sig + total, cs_sigwriter_bound(w, c), &olen);
            total += olen; off += c;
        }
        cs_sigwriter_finish(w, sig + total, cs_sigwriter_bound(w, 0), &olen); total += olen;
        cs_sigwriter_free(w);
        cs_sumset *s; cs_sumset_new(magic, (uint32_t)bl, 8, &s);
        cs_sumset_add(s, sig + 12, (total - 12) / 12); cs_sumset_index(s);
        cs_delta *d; cs_delta_new(s, &d);
        size_t used, dl = 0; uint8_t *delta = malloc(4 * n + 100000);
        for (size_t off = 0; off < n;) {
            size_t c = 1 + (size_t)(rand() % 20000); if (c > n - off) c = n - off;
            size_t done = 0;
            while (done < c) {
                size_t cap = CS_DELTA_MIN_OUT + (size_t)(rand() % 1000);
                cs_status st = cs_delta_feed(d, nw + off + done, c - done, &used, out, cap, &olen);
                if (st < 0) { printf("delta err %d\n", st); return 1; }
                memcpy(delta + dl, out, olen); dl += olen; done += used;
                if (st == CS_NEED_INPUT && done == c) break;
            }
            off += c;
        }
        for (;;) {
            cs_status st = cs_delta_finish(d, out, CS_DELTA_MIN_OUT, &olen);
            memcpy(delta + dl, out, olen); dl += olen;
            if (st == CS_DONE) break;
        }
        cs_delta_free(d); cs_sumset_free(s);
        /* decode the delta and rebuild */
        cs_patch p; cs_patch_init(&p); uint64_t a, b; size_t pos = 0, rl = 0;
        uint8_t *rebuilt = malloc(n + 100);
        for (;;) {
            cs_status st = cs_patch_next(&p, delta + pos, dl - pos, &used, &a, &b);
            if (st == CS_LITERAL) { memcpy(rebuilt + rl, delta + pos + a, b); rl += b; }
            else if (st == CS_COPY) { memcpy(rebuilt + rl, basis + a, b); rl += b; }
            pos += used;
            if (st == CS_DONE) break;
            if (st < 0 || (st == CS_NEED_INPUT && pos == dl)) {
                printf("patch err %d\n", st);
                return 1;
            }
        }
        if (rl != n || memcmp(rebuilt, nw, n)) { printf("mismatch iter %d\n", iter); return 1; }
        /* random garbage into the decoder */
        for (int k = 0; k < 50; k++) {
            uint8_t junk[64]; for (int j = 0; j < 64; j++) junk[j] = (uint8_t)rand();
            memcpy(junk, "rs\x02\x36", 4);
            cs_patch_init(&p); size_t jp = 0;
            while (jp < 64) {
                cs_status st = cs_patch_next(&p, junk + jp, 64 - jp, &used, &a, &b);
                jp += used;
                if (st < 0 || st == CS_DONE) break;
            }
        }
        free(basis); free(nw); free(sig); free(delta); free(rebuilt);
    }
    puts("ok");
    return 0;
}
"""


def test_rsync_engine_under_asan_and_ubsan(tmp_path: Path) -> None:
    src = tmp_path / "harness.c"
    src.write_text(HARNESS)
    exe = tmp_path / "harness"
    sources = sorted(str(p) for p in NATIVE.glob("*.c"))
    subprocess.run(["gcc", "-std=c99", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
                    "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                    "-fno-omit-frame-pointer", f"-I{NATIVE}", str(src), *sources, "-o", str(exe)],
                   check=True, timeout=300)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "ok"
