"""The daemon's memory diet: a running ``csembed daemon`` never loads the TLS
half of OpenSSL (asyncio would import :mod:`ssl` if it could), on the
wifi-piano board no module the board does not use (libcrypto, uTP, web,
serial, the other CLI commands), sizes its links' buffers by the board and
hands freed heap back -- yet serves shares and control requests as usual.
The RSS figures themselves are in ``tools/bench/memory.py``."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    code_of,
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


# -- what the wifi-piano daemon loads -------------------------------------------------------

# Modules the wifi-piano board never needs (no web page, no serial line, no tracker
# configured, builtin SHA-256), and the CLI's other sub-commands. uTP and STUN stay:
# they are how the owner reaches the piano through a NAT. libsodium is called through
# PyNaCl's compiled module alone (not its wrappers), libc through cffi's backend (not
# ctypes, nor cffi's C parser).
NOT_FOR_THE_PIANO = (
    "hashlib", "_hashlib", "hmac", "secrets", "tempfile", "shutil", "bz2", "lzma",
    "nacl.bindings", "nacl.signing", "nacl.utils", "ctypes", "_ctypes", "pycparser",
    "cffi.api",
    "serial", "csembed.runtime.control_serial", "csembed.runtime.web_server", "csembed.web",
    "csembed.runtime.tracker_client",
    "csembed.runtime.tracker_server", "csembed.cli_commands.demo",
    "csembed.cli_commands.daemon_client", "csembed.cli_commands.pairing",
    "csembed.cli_commands.rsync",
    "csembed.cli_commands.tracker",
)
# Loaded on the first delta (a changed file of which the other side holds the old version):
# a sync of new files, as below, never needs them.
NOT_UNTIL_A_DELTA = ("csembed.rsync", "csembed.native", "csembed._native")


def _imported(log: Path) -> dict[str, str]:
    """Every module a process started with PYTHONPROFILEIMPORTTIME=1 imported (from its
    stderr), with the module whose import brought it in (``""`` at the top)."""
    importer: dict[str, str] = {}
    waiting: dict[int, list[str]] = {}  # depth -> modules whose importer comes later
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        field = line.rsplit("|", 1)[1]
        name = field.strip()
        if name == "imported package":
            continue
        depth = (len(field) - len(field.lstrip()) - 1) // 2
        for child in waiting.pop(depth + 1, []):
            importer.setdefault(child, name)
        waiting.setdefault(depth, []).append(name)
        importer.setdefault(name, "")
    return importer


@pytest.mark.once
def test_piano_daemon_syncs_both_ways_without_modules_its_board_does_not_need(
        procs: Procs) -> None:
    profile = ["env", "PYTHONPROFILEIMPORTTIME=1"]
    piano = procs.daemon("piano", board="wifi-piano", prefix=profile)
    laptop = procs.daemon("laptop", "--peer", piano.address, prefix=profile)
    takes = procs.root / "takes"
    takes.mkdir()
    (takes / "take1.mid").write_bytes(bytes(range(256)) * 40)
    code = code_of(piano.cli("share", takes, "--json").stdout)
    wait_for(lambda: (piano.share(takes) or {}).get("scans", 0) >= 1, "the piano's first scan")
    copy = procs.root / "laptop-takes"
    laptop.cli("attach", code, copy)
    wait_for(lambda: (copy / "take1.mid").exists(), "the laptop to fetch take1.mid")
    (copy / "lesson.mid").write_bytes(b"MThd" * 3000)
    laptop.rescan_until_scanned(copy)
    wait_for(lambda: (takes / "lesson.mid").exists()
             and (takes / "lesson.mid").read_bytes() == b"MThd" * 3000,
             "the piano to fetch lesson.mid")
    mapped = _mapped_files(piano.proc.pid)
    assert not any(name.startswith(("libcrypto", "_hashlib")) for name in mapped), sorted(mapped)
    on_piano, on_laptop = _imported(piano.log), _imported(laptop.log)
    assert "csembed.runtime.daemon" in on_piano and "csembed.directory.download" in on_piano
    assert {m: on_piano[m] for m in NOT_FOR_THE_PIANO if m in on_piano} == {}
    assert {m: on_piano[m] for m in NOT_UNTIL_A_DELTA if m in on_piano} == {}
    # the same daemon on the desktop board does load what that board uses
    assert {"csembed.runtime.utp_endpoint", "_hashlib"} <= on_laptop.keys()


# -- buffers sized by the board -------------------------------------------------------------

def test_links_read_in_the_boards_per_connection_share() -> None:
    from csembed.board_profile import load_board
    from csembed.protocol.core import CoreConfig
    from csembed.protocol.core_access import CredentialRegistry
    from csembed.runtime.connection_manager import ConnectionManager, link_buffer
    from csembed.runtime.rate_limit import DaemonRateLimits
    from csembed.runtime.session_stream import READ_SIZE

    piano, desktop = load_board("wifi-piano").memory, load_board("desktop").memory
    assert link_buffer(piano) == 256 * 1024 and link_buffer(desktop) == READ_SIZE

    async def main() -> int:
        manager = ConnectionManager(object(), CredentialRegistry(),  # type: ignore[arg-type]
                                    CoreConfig(), limits=DaemonRateLimits.from_rates(0, 0),
                                    max_connections=4)
        manager.utp_enabled = False
        manager.link_buffer = link_buffer(piano)
        accepted: asyncio.Queue[Any] = asyncio.Queue()
        handle = manager._accepted

        async def seen(stream: Any) -> None:
            accepted.put_nowait(stream)
            await handle(stream)
        manager._accepted = seen  # type: ignore[method-assign]
        host, port = await manager.listen("127.0.0.1", 0)
        try:
            _, writer = await asyncio.open_connection(host, port)
            stream = await asyncio.wait_for(accepted.get(), 30)
            writer.close()
            return int(stream._link.read_size)
        finally:
            await manager.close()

    assert asyncio.run(main()) == 256 * 1024


def test_both_databases_of_a_piano_share_keep_the_boards_page_cache(tmp_path: Path) -> None:
    import random

    from csembed.board_profile import load_board
    from csembed.database import Store
    from csembed.directory.local_share import open_local_share

    piano = load_board("wifi-piano")
    (tmp_path / "share").mkdir()
    local = open_local_share(tmp_path / "share", tmp_path / "state", piano, create=True,
                             rng=random.Random(1))
    store = Store(tmp_path / "db.sqlite3", peer_id="0" * 32, cache_size=piano.storage.db_cache)
    try:
        assert local.conn.execute("PRAGMA cache_size").fetchone()[0] == -256  # KiB
        assert store.pragma("cache_size") == -256
    finally:
        local.close()
        store.close()
    default = Store(tmp_path / "other.sqlite3", peer_id="0" * 32)
    assert default.pragma("cache_size") == -2000  # SQLite's own default, untouched
    default.close()


def test_trim_hands_freed_heap_back_to_the_kernel() -> None:
    import platform

    from csembed.runtime.heap_trim import trim
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    trim()
    blocks = [bytearray(4000) for _ in range(4000)]  # 16 MB of malloc'd blocks
    pin = blocks[-1]  # the last block keeps glibc from trimming the heap's top by itself
    del blocks
    freed_but_resident = rss()
    assert trim() is True
    assert freed_but_resident - rss() > 8_000_000  # generous: ~16 MB go back
    del pin


# -- start-only modules ---------------------------------------------------------------------

def test_start_only_modules_are_freed_before_the_daemon_runs(tmp_path: Path) -> None:
    """argparse (with gettext) and tomllib read the command line and the board
    profile, then go: no module entry and no class of theirs is left alive."""
    import subprocess

    probe = (
        "import gc, sys\n"
        "import csembed.cli_commands.daemon as d\n"
        "def started(args):\n"
        "    d.options_from(args)\n"
        "    gc.collect()\n"
        "    left = {o.__module__ for o in gc.get_objects() if isinstance(o, type)\n"
        "            and o.__module__.split('.')[0] in ('argparse', 'gettext', 'tomllib')}\n"
        "    print(sorted(m for m in ('argparse', 'gettext', 'tomllib') if m in sys.modules),\n"
        "          sorted(left), args.board)\n"
        "    return 0\n"
        "d.run = started\n"
        "from csembed.cli import main\n"
        f"sys.exit(main(['daemon', '--board', 'wifi-piano', '--data-dir', {str(tmp_path)!r}]))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.split() == ["[]", "[]", "wifi-piano"]


def test_a_module_imported_before_a_transient_block_stays() -> None:
    import encodings  # noqa: F401  (loaded before the block)

    from csembed.transient_modules import transient_modules
    sys.modules.pop("encodings.rot_13", None)
    with transient_modules("encodings", "csembed_no_such_root"):
        import encodings.rot_13  # noqa: F401  (new inside the block)
    assert "encodings" in sys.modules and "encodings.rot_13" not in sys.modules
    assert not hasattr(sys.modules["encodings"], "rot_13")
