"""Issue 10 item 14: an old PyNaCl (Debian bookworm's 1.5) is named, not a traceback.

The missing ``crypto_core_ed25519_from_uniform`` is simulated by hiding it
from PyNaCl's compiled module (``nacl._sodium.lib``, which csembed calls
directly) before csembed is imported, in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from csembed.security import sodium, spake2
from csembed.security.sodium_version import MissingDependency, check_sodium

_HIDE = "crypto_core_ed25519_from_uniform"


class _OldLib:
    """PyNaCl 1.5's ``lib`` as csembed sees it: everything but the 1.6 function."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib

    def __getattr__(self, name: str) -> Any:
        if name == _HIDE:
            raise AttributeError(name)
        return getattr(self._lib, name)


_OLD_NACL = ("import nacl._sodium as s, runpy, sys\n"
             "class Old:\n"
             "    def __init__(self, lib): self.lib = lib\n"
             "    def __getattr__(self, name):\n"
             f"        if name == {_HIDE!r}: raise AttributeError(name)\n"
             "        return getattr(self.lib, name)\n"
             "s.lib = Old(s.lib)\n"
             "sys.argv[0] = 'csembed'; runpy.run_module('csembed', run_name='__main__')")


def _run_old_nacl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _OLD_NACL, *args], capture_output=True,
                          text=True, timeout=60)


def test_help_works_without_the_new_function() -> None:
    result = _run_old_nacl("--help")
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout
    assert "Traceback" not in result.stderr


def test_daemon_refuses_to_start_naming_the_version(tmp_path: Path) -> None:
    result = _run_old_nacl("daemon", "--data-dir", str(tmp_path / "d"), "--board", "desktop",
                           "--listen", "127.0.0.1:0", "--no-lan")
    assert result.returncode != 0
    assert "PyNaCl >= 1.6" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_spake2_raises_a_named_error(monkeypatch: pytest.MonkeyPatch) -> None:
    check_sodium()  # the installed PyNaCl is new enough
    monkeypatch.setattr(sodium, "lib", _OldLib(sodium.lib))
    spake2.blinding_points.cache_clear()
    try:
        with pytest.raises(MissingDependency, match=r"PyNaCl >= 1\.6"):
            spake2.Spake2("client", b"id", b"password", lambda n: b"\x01" * n)
    finally:
        spake2.blinding_points.cache_clear()


def test_pyproject_declares_the_minimum() -> None:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("not running from a source tree")
    assert '"PyNaCl>=1.6"' in pyproject.read_text()
