"""Board profiles: the bundled ones load, and every kind of mistake is named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from csembed.board_profile import (
    BoardError,
    available_boards,
    boards_dir,
    iter_boards,
    load_board,
    parse_board,
)

REQUIRED = {"desktop", "rpi-zero-2w", "rpi-4", "wifi-piano"}


def _desktop_data() -> dict:
    with (boards_dir() / "desktop.toml").open("rb") as fh:
        return tomllib.load(fh)


def test_required_boards_are_bundled_and_valid() -> None:
    assert REQUIRED <= set(available_boards())
    for board in iter_boards():
        assert board.name == Path(board.source).stem
        assert board.memory.chunk_size <= board.memory.max_message


def test_piano_limits_match_the_reference_instrument() -> None:
    piano = load_board("wifi-piano")
    assert piano.ram == 256 * 1024 * 1024
    assert piano.storage.quota == 1024**3
    assert piano.network.upload_rate == 1_000_000
    assert piano.storage.write_policy == "flash"
    desktop = load_board("desktop")
    assert piano.memory.max_bytes_in_flight < desktop.memory.max_bytes_in_flight
    assert desktop.network.upload_rate == 0  # unlimited


def test_piano_uses_builtin_sha256_keeps_utp_and_buffers_by_its_share() -> None:
    piano, desktop = load_board("wifi-piano"), load_board("desktop")
    assert (piano.cpu.sha256, piano.network.utp) == ("builtin", True)
    assert (desktop.cpu.sha256, desktop.network.utp) == ("openssl", True)
    assert piano.memory.per_connection == 256 * 1024  # 1 MiB in flight, 4 connections
    assert piano.storage.db_cache == 256 * 1024 < desktop.storage.db_cache


def test_keys_added_later_may_be_left_out_of_a_profile() -> None:
    data = _desktop_data()
    del data["cpu"]["sha256"], data["network"]["utp"], data["storage"]["db_cache"]
    board = parse_board(data, "old-board.toml")
    assert (board.cpu.sha256, board.network.utp) == ("openssl", True)
    assert board.storage.db_cache == 2000 * 1024  # SQLite's own default


def test_unknown_board_lists_the_available_ones() -> None:
    with pytest.raises(BoardError, match="wifi-piano"):
        load_board("toaster")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["memory"].update(chunk_sise=1), "unknown key memory.chunk_sise"),
        (lambda d: d.update(extras={}), r"unknown table \[extras\]"),
        (lambda d: d["memory"].pop("chunk_size"), "missing key memory.chunk_size"),
        (lambda d: d.pop("cpu"), r"missing table \[cpu\]"),
        (lambda d: d["memory"].update(max_open_transfers=0), "memory.max_open_transfers"),
        (lambda d: d["memory"].update(max_connections=True), "memory.max_connections"),
        (lambda d: d["storage"].update(quota="lots"), "storage.quota"),
        (lambda d: d["storage"].update(write_policy="eeprom"), "storage.write_policy"),
        (lambda d: d["network"].update(ping_interval="2 fortnights"), "network.ping_interval"),
        (lambda d: d["cpu"].update(scan_budget=1.5), "cpu.scan_budget"),
        (lambda d: d["cpu"].update(gzip_level=10), "cpu.gzip_level"),
        (lambda d: d["cpu"].update(sha256="md5"), "cpu.sha256"),
        (lambda d: d["network"].update(utp="yes"), "network.utp"),
        (lambda d: d["storage"].update(db_cache="1 KiB"), "storage.db_cache"),
        (lambda d: d["memory"].update(chunk_size="32 MiB"), "memory.chunk_size"),
        (lambda d: d["memory"].update(chunk_size="2 MiB", max_message="1 MiB"),
         "chunk_size is larger than memory.max_message"),
    ],
)
def test_bad_profiles_name_file_and_key(mutate, message: str) -> None:
    data = _desktop_data()
    mutate(data)
    with pytest.raises(BoardError, match=message) as info:
        parse_board(data, "my-board.toml")
    assert str(info.value).startswith("my-board.toml: ")


def test_profile_from_a_path_and_a_broken_file(tmp_path: Path) -> None:
    good = tmp_path / "mine.toml"
    good.write_text((boards_dir() / "rpi-4.toml").read_text().replace('"rpi-4"', '"mine"'))
    assert load_board(good).name == "mine"
    bad = tmp_path / "broken.toml"
    bad.write_text("[board\nname=")
    with pytest.raises(BoardError, match="broken.toml: not valid TOML"):
        load_board(bad)
    with pytest.raises(BoardError, match="no such board profile"):
        load_board(tmp_path / "absent.toml")
