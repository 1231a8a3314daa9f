"""libc calls through cffi's backend: bound by hand-built signatures, errno kept,
a missing symbol is ``None``, and the daemon's users load neither ctypes nor
cffi's C parser."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from csembed import libc_calls

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's libc")


def test_a_bound_function_works_and_leaves_errno(tmp_path: Path) -> None:
    syncfs = libc_calls.function("syncfs", "int", "int")
    assert syncfs is not None
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert syncfs(fd) == 0
    finally:
        os.close(fd)
    assert syncfs(-1) == -1
    assert libc_calls.last_errno() == errno.EBADF


def test_a_string_argument_and_a_failing_call_name_their_errno(tmp_path: Path) -> None:
    init = libc_calls.function("inotify_init1", "int", "int")
    add = libc_calls.function("inotify_add_watch", "int", "int", "char *", "uint32_t")
    assert init is not None and add is not None
    fd = init(os.O_CLOEXEC)
    assert fd >= 0
    try:
        assert add(fd, os.fsencode(tmp_path), 0x100) >= 0  # IN_CREATE
        assert add(fd, os.fsencode(tmp_path / "missing"), 0x100) == -1
        assert libc_calls.last_errno() == errno.ENOENT
    finally:
        os.close(fd)


def test_a_missing_symbol_is_none_and_an_unknown_type_an_error() -> None:
    assert libc_calls.function("csembed_no_such_function", "int", "int") is None
    with pytest.raises(ValueError, match="unsupported C type"):
        libc_calls.function("syncfs", "int", "double")


def test_the_daemons_libc_users_load_neither_ctypes_nor_cffis_parser() -> None:
    probe = ("import sys, csembed.runtime.heap_trim as h, csembed.directory.disk_sync as f, "
             "csembed.runtime.change_notify as c; "
             "print(h.trim() in (True, False), f._syncfs is not None, c._libc() is not None, "
             "sorted(m for m in ('ctypes', 'pycparser', 'cffi.api') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split(" ", 3)
    assert out == ["True", "True", "True", "[]\n"]


def test_without_cffis_backend_ctypes_binds_the_same_calls(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libc_calls, "_backend", None)
    monkeypatch.setattr(libc_calls, "_process", None)
    monkeypatch.setattr(libc_calls, "_ctypes", None)
    syncfs = libc_calls.function("syncfs", "int", "int")
    assert syncfs is not None
    assert syncfs(-1) == -1 and libc_calls.last_errno() == errno.EBADF
    add = libc_calls.function("inotify_add_watch", "int", "int", "char *", "uint32_t")
    assert add is not None and add(-1, os.fsencode(tmp_path), 0x100) == -1
    assert libc_calls.function("csembed_no_such_function", "int") is None
