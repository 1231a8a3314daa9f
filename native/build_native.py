"""cffi builder for ``csembed._native``.

Every ``*.c`` file in this folder is compiled into one extension module in
cffi's API mode. The declarations exposed to Python live in
``csembed_native.cdef`` so that the C sources stay free of any Python or cffi
knowledge. setuptools runs this through ``cffi_modules`` at install time.
"""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "csembed_native.cdef").read_text())

_headers = sorted(p.name for p in HERE.glob("*.h"))
_sources = sorted(str(p.relative_to(HERE.parent)) for p in HERE.glob("*.c"))

ffibuilder.set_source(
    "csembed._native",
    "".join(f'#include "{h}"\n' for h in _headers),
    sources=_sources,
    include_dirs=[str(HERE)],
    extra_compile_args=["-std=c99", "-O3", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
