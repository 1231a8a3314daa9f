"""The daemon's memory diet: a running ``csembed daemon`` never loads the TLS
half of OpenSSL (asyncio would import :mod:`ssl` if it could), yet serves
shares and control requests as usual."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)

from csembed.cli_commands.daemon import without_tls


def _mapped_files(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as f:
        return {Path(line.split()[5]).name for line in f if len(line.split()) > 5}


def test_running_daemon_has_no_ssl_loaded_and_still_syncs_a_share(procs: Procs) -> None:
    d = procs.daemon("piano", board="wifi-piano")
    share = procs.root / "takes"
    share.mkdir()
    (share / "take1.mid").write_bytes(b"MThd" + bytes(range(200)))
    d.cli("share", share)
    wait_for(lambda: (d.share(share) or {}).get("scans", 0) >= 1, "the first scan")
    mapped = _mapped_files(d.proc.pid)
    assert any(name.startswith("_asyncio") for name in mapped), sorted(mapped)
    assert not any(name.startswith(("_ssl", "libssl")) for name in mapped), sorted(mapped)


def test_guard_leaves_a_process_that_already_runs_asyncio_alone() -> None:
    import asyncio  # noqa: F401  (the test process has it loaded already)
    before = sys.modules.get("ssl", "absent")
    assert without_tls() is False
    assert sys.modules.get("ssl", "absent") is before


def test_the_c_backend_leaves_the_pure_twin_unloaded() -> None:
    import os
    import subprocess

    from csembed import native
    if "c" not in native.available_backends():
        pytest.skip("the C extension is not built")
    probe = ("import sys, csembed.native as n; print(n.BACKEND, 'csembed.native.pure' in "
             "sys.modules, n.pure.NAME, 'csembed.native.pure' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "CSEMBED_BACKEND": "c"}).stdout.split()
    assert out == ["c", "False", "python", "True"]
