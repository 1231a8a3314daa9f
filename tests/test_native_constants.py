"""The native format constants, kept in three places, agree; so do both backends at the edges.

The constants live in ``native/*.h`` (the C code), ``native/csembed_native.cdef``
(what cffi exposes) and ``csembed/native/rsync_format.py`` plus the pure
twins (what Python uses). The tests parse the header and the cdef, evaluate
each ``#define``, and compare with the Python values and with what the
compiled module reports; every define of ``rsync_format.h`` must have a
counterpart, so a new constant cannot be added on one side only.

At the edges: values that do not fit the 32-bit header fields are refused
with the same error by both backends, ``count`` is read-only on both, and a
32-bit build of ``sumset.c`` (``gcc -m32``, where ``size_t`` has 32 bits)
refuses record counts whose byte size would overflow instead of writing past
a short allocation.
"""

from __future__ import annotations

import ast
import operator
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from csembed.native import get_backend
from csembed.native import rsync_format as fmt
from csembed.native.errors import RsyncParamError
from csembed.native.pure import weaksums

NATIVE = Path(__file__).resolve().parent.parent / "native"

_DEFINE = re.compile(r"^[ \t]*#define[ \t]+(CS_[A-Z0-9_]+)[ \t]+([^\n]+?)[ \t]*(?:/\*.*)?$",
                     re.MULTILINE)
_OPS = {ast.LShift: operator.lshift, ast.Add: operator.add, ast.Mult: operator.mul,
        ast.Sub: operator.sub}


def _c_int(text: str) -> int:
    """Value of a C integer constant expression made of literals, + - * and <<."""
    expr = re.sub(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", text)

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return int(_OPS[type(node.op)](value(node.left), value(node.right)))
        raise ValueError(f"not a plain integer expression: {text!r}")

    return value(ast.parse(expr, mode="eval").body)


def _defines(path: Path) -> dict[str, str]:
    return dict(_DEFINE.findall(path.read_text()))


def _enum(text: str, name: str) -> dict[str, int]:
    body = re.search("typedef enum " + name + r" \{(.*?)\}", text, re.DOTALL)
    assert body, f"enum {name} not found"
    pairs = re.findall(r"(CS_[A-Z_]+)\s*=\s*(-?\d+)", body.group(1))
    return {key: int(val) for key, val in pairs}


#: every #define of rsync_format.h and the Python value it must equal
PYTHON_TWIN = {
    "CS_MAGIC_DELTA": fmt.DELTA_MAGIC,
    "CS_MAGIC_MD4_SIG": fmt.MD4_SIG_MAGIC,
    "CS_MAGIC_BLAKE2_SIG": fmt.BLAKE2_SIG_MAGIC,
    "CS_MAGIC_RK_MD4_SIG": fmt.RK_MD4_SIG_MAGIC,
    "CS_MAGIC_RK_BLAKE2_SIG": fmt.RK_BLAKE2_SIG_MAGIC,
    "CS_SIG_HEADER_LEN": fmt.SIG_HEADER_LEN,
    "CS_MD4_SUM_LEN": fmt.STRONG_MAX["md4"],
    "CS_BLAKE2_SUM_LEN": fmt.STRONG_MAX["blake2"],
    "CS_MAX_STRONG_LEN": max(fmt.STRONG_MAX.values()),
    "CS_MAX_BLOCK_LEN": fmt.MAX_BLOCK_LEN,
    "CS_OP_END": fmt.OP_END,
    "CS_OP_LITERAL_1": fmt.OP_END + 1,
    "CS_OP_LITERAL_64": fmt.OP_LITERAL_64,
    "CS_OP_LITERAL_N1": fmt.OP_LITERAL_N1,
    "CS_OP_LITERAL_N8": fmt.OP_LITERAL_N8,
    "CS_OP_COPY_N1_N1": fmt.OP_COPY_N1_N1,
    "CS_OP_COPY_N8_N8": fmt.OP_COPY_N8_N8,
    "CS_LITERAL_FLUSH": fmt.LITERAL_FLUSH,
}
WEAKSUM_TWIN = {
    "rollsum.h": {"CS_ROLLSUM_CHAR_OFFSET": weaksums.ROLLSUM_CHAR_OFFSET},
    "rabinkarp.h": {"CS_RK_SEED": weaksums.RK_SEED, "CS_RK_MULT": weaksums.RK_MULT,
                    "CS_RK_INVM": weaksums.RK_INVM, "CS_RK_ADJ": weaksums.RK_ADJ},
}


def _compiled():  # type: ignore[no-untyped-def]
    try:
        from csembed._native import lib
    except ImportError:
        pytest.skip("the C extension is not built")
    return lib


def test_rsync_format_header_matches_the_python_constants() -> None:
    header = {name: _c_int(text) for name, text in _defines(NATIVE / "rsync_format.h").items()}
    assert set(header) == set(PYTHON_TWIN), "a define without a Python twin, or a stale one"
    assert header == PYTHON_TWIN
    # the signature magics name the sums the Python table says
    kinds = {"CS_MAGIC_MD4_SIG": ("rollsum", "md4"), "CS_MAGIC_BLAKE2_SIG": ("rollsum", "blake2"),
             "CS_MAGIC_RK_MD4_SIG": ("rabinkarp", "md4"),
             "CS_MAGIC_RK_BLAKE2_SIG": ("rabinkarp", "blake2")}
    assert {header[name]: kind for name, kind in kinds.items()} == fmt.SIG_MAGICS


def test_weak_sum_headers_match_the_pure_twins() -> None:
    for name, twins in WEAKSUM_TWIN.items():
        defines = {key: _c_int(text) for key, text in _defines(NATIVE / name).items()}
        assert {key: defines[key] for key in twins} == twins, name


def test_cdef_agrees_with_the_headers_and_the_compiled_module() -> None:
    cdef_text = (NATIVE / "csembed_native.cdef").read_text()
    header = {name: _c_int(text) for name, text in _defines(NATIVE / "rsync_format.h").items()}
    cdef = _defines(NATIVE / "csembed_native.cdef")
    assert cdef, "no #define found in the cdef"
    lib = _compiled()
    for name, text in cdef.items():
        if name not in header:
            continue
        if text != "...":  # a value written out must equal the header's
            assert _c_int(text) == header[name], name
        assert getattr(lib, name) == header[name], name
    # the status enum: cs_status.h, the cdef, the compiled module and the Python events
    status_h = _enum((NATIVE / "cs_status.h").read_text(), "cs_status")
    assert _enum(cdef_text, "cs_status") == status_h
    assert {key: getattr(lib, key) for key in status_h} == status_h
    assert (fmt.NEED_INPUT, fmt.DONE, fmt.LITERAL, fmt.COPY) == (
        status_h["CS_NEED_INPUT"], status_h["CS_DONE"], status_h["CS_LITERAL"],
        status_h["CS_COPY"])


@pytest.mark.parametrize("backend", ["c", "python"])
def test_count_is_read_only_on_both_backends(backend: str) -> None:
    if backend == "c":
        _compiled()
    native = get_backend(backend)
    for cls in (native.RollSum, native.RabinKarp):
        window = cls(b"abcdef")
        assert window.count == 6
        window.rollout(ord("a"))
        assert window.count == 5
        with pytest.raises(AttributeError):
            window.count = 0  # type: ignore[misc]
        assert window.copy().count == 5
    sums = native.SumSet(fmt.RK_BLAKE2_SIG_MAGIC, 2048, 8)
    sums.add(bytes(12 * 3))
    assert sums.count == 3
    with pytest.raises(AttributeError):
        sums.count = 0  # type: ignore[misc]


OUT_OF_RANGE = [  # (magic, block_len, strong_len) a 32-bit header field cannot hold
    (fmt.RK_BLAKE2_SIG_MAGIC, 2**32 + 2048, 32),  # would wrap to a valid 2048
    (fmt.RK_BLAKE2_SIG_MAGIC, 2048, 2**32 + 16),
    (fmt.RK_BLAKE2_SIG_MAGIC, -1, 32),
    (fmt.RK_BLAKE2_SIG_MAGIC, 2048, -1),
    (2**32 + fmt.RK_BLAKE2_SIG_MAGIC, 2048, 32),
    (fmt.RK_BLAKE2_SIG_MAGIC, fmt.MAX_BLOCK_LEN + 1, 32),
    (fmt.RK_BLAKE2_SIG_MAGIC, 0xFFFFFFFF, 0xFFFFFFFF),
]


@pytest.mark.parametrize("backend", ["c", "python"])
@pytest.mark.parametrize("values", OUT_OF_RANGE)
def test_overflowing_header_values_get_the_same_error_on_both_backends(
        backend: str, values: tuple[int, int, int]) -> None:
    if backend == "c":
        _compiled()
    native = get_backend(backend)
    for cls in (native.SumSet, native.SigGenerator):
        with pytest.raises(RsyncParamError, match="^signature: "):
            cls(*values)


SUMSET_32 = r"""
/* sumset.c built with a 32-bit size_t: record counts whose byte sizes overflow. */
#include <stdint.h>
#include <stdio.h>
#include "sumset.h"

static int fail(const char *what) { printf("FAIL %s\n", what); return 1; }

int main(void) {
    static uint8_t records[36 * 4];
    cs_sumset *s;
    if (sizeof(size_t) != 4) return fail("size_t is not 32-bit");
    if (cs_sumset_new(CS_MAGIC_RK_BLAKE2_SIG, 2048, 32, &s) != CS_OK) return fail("new");
    /* 2^27 records * 32 strong bytes = 2^32: wraps to 0 in a 32-bit size_t */
    if (cs_sumset_add(s, records, (size_t)1 << 27) != CS_ERR_LIMIT) return fail("2^27");
    if (cs_sumset_add(s, records, ((size_t)1 << 30) - 2) != CS_ERR_LIMIT) return fail("2^30");
    if (cs_sumset_count(s) != 0) return fail("count after refusals");
    /* the set still works after refusing */
    if (cs_sumset_add(s, records, 4) != CS_OK || cs_sumset_index(s) != CS_OK)
        return fail("small set");
    if (cs_sumset_count(s) != 4) return fail("count");
    size_t real = cs_sumset_memory(s);
    size_t saved = s->capacity;
    s->capacity = SIZE_MAX / 8; /* a figure that would wrap to a small number */
    if (cs_sumset_memory(s) != SIZE_MAX) return fail("memory saturates");
    s->capacity = saved;
    if (cs_sumset_memory(s) != real) return fail("memory");
    cs_sumset_free(s);
    puts("ok");
    return 0;
}
"""


def _m32_works(tmp: Path) -> bool:
    probe = tmp / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    return subprocess.run(["gcc", "-m32", str(probe), "-o", str(tmp / "probe")],
                          capture_output=True).returncode == 0


def test_sumset_refuses_overflowing_counts_with_a_32_bit_size_t(tmp_path: Path) -> None:
    if shutil.which("gcc") is None or not _m32_works(tmp_path):
        pytest.skip("needs gcc with 32-bit support (apt-get install gcc-multilib)")
    src = tmp_path / "sumset32.c"
    src.write_text(SUMSET_32)
    exe = tmp_path / "sumset32"
    sources = [str(p) for p in sorted(NATIVE.glob("*.c"))]
    subprocess.run(["gcc", "-m32", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror",
                    f"-I{NATIVE}", str(src), *sources, "-o", str(exe)],
                   check=True, timeout=300, capture_output=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr
