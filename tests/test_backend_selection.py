"""The backend the suite runs on is the one asked for.

tox's ``native`` env sets ``CSEMBED_BACKEND=c``: if the extension failed to
build, the package falls back to pure Python (loudly), and this test turns
that fallback into a failure so a broken C build cannot pass CI unnoticed.
"""

from __future__ import annotations

import os
import subprocess
import sys

from csembed import native


def test_requested_backend_is_active() -> None:
    requested = os.environ.get("CSEMBED_BACKEND", "").strip().lower()
    if requested in ("c", "native"):
        assert native.BACKEND == "c"
    elif requested in ("python", "pure"):
        assert native.BACKEND == "python"
    else:
        assert native.BACKEND in ("c", "python")


def test_forcing_pure_python_in_a_fresh_process() -> None:
    env = dict(os.environ, CSEMBED_BACKEND="python")
    out = subprocess.run([sys.executable, "-c", "import csembed.native as n; print(n.BACKEND)"],
                         env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "python"
    assert "WARNING" not in out.stderr
