"""Serving content by hash, in ranges, verified against the scan."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from test_directory_support import make_share

from csembed.directory.errors import ContentChanged, DirectoryError
from csembed.directory.reader import ContentSource


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _open(share, data: bytes) -> ContentSource:
    source = share.reader.open(_sha(data))
    assert source is not None
    return source


def test_serve_whole_and_ranges(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    data = os.urandom(100_000)
    (share.root / "f.bin").write_bytes(data)
    share.scan_commit()
    assert share.reader.has(_sha(data))
    with _open(share, data) as source:
        assert source.size == 100_000 and source.origin == "/f.bin"
        chunks = list(source.chunks(chunk_size=16_384))
        assert b"".join(chunks) == data and max(map(len, chunks)) == 16_384
        assert b"".join(source.chunks(99_000, 1000, 300)) == data[99_000:]
        assert b"".join(source.chunks(5, 0)) == b""
        bad: list[tuple[object, object]] = [(-1, 10), (0, 100_001), (100_000, 1), (True, 1),
                                            (0, "5")]
        for start, count in bad:
            with pytest.raises(DirectoryError):
                list(source.chunks(start, count))  # type: ignore[arg-type]


def test_changed_file_is_not_served(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "a").write_bytes(b"content")
    share.scan_commit()
    (share.root / "a").write_bytes(b"CONTENT")  # same size, not rescanned
    assert share.reader.open(_sha(b"content")) is None
    assert share.reader.open(_sha(b"unknown")) is None


def test_second_copy_serves_when_first_changed(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    for name in ("a", "b"):
        (share.root / name).write_bytes(b"same")
    share.scan_commit()
    (share.root / "a").write_bytes(b"diff")
    with _open(share, b"same") as source:
        assert source.origin == "/b"


def test_change_during_streaming_stops_it(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    data = os.urandom(50_000)
    (share.root / "f").write_bytes(data)
    share.scan_commit()
    with _open(share, data) as source:
        stream = source.chunks(chunk_size=10_000)
        assert next(stream) == data[:10_000]
        with open(share.root / "f", "ab") as fh:
            fh.write(b"appended")
        with pytest.raises(ContentChanged):
            next(stream)


def test_serves_from_archive(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "a").write_bytes(b"archived bytes")
    share.scan_commit()
    share.store.delete("/a")
    with _open(share, b"archived bytes") as source:
        assert source.origin.startswith("archive:")
        assert b"".join(source.chunks()) == b"archived bytes"
