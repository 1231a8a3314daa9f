"""`csembed boards check` and tools/board-probe."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from csembed.board_profile import available_boards, boards_dir, parse_board

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))

from makerkit.board_probe import Measurements, suggest  # noqa: E402

MiB = 1 << 20


def csembed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "csembed", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("name", available_boards())
def test_every_bundled_profile_passes_the_check(name):
    result = csembed("boards", "check", str(boards_dir() / f"{name}.toml"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["valid"] is True


@pytest.mark.parametrize("edit, named", [
    (("chunk_size = ", "chunk_sise = "), "unknown key memory.chunk_sise"),
    (('gzip_level = 1', 'gzip_level = 12'), "bad value for cpu.gzip_level"),
    (('[cpu]', '[cpus]'), "unknown table [cpus]"),
    (('scan_budget = 0.05', ''), "missing key cpu.scan_budget"),
])
def test_a_broken_profile_is_refused_naming_file_and_key(tmp_path, edit, named):
    text = (boards_dir() / "wifi-piano.toml").read_text()
    assert edit[0] in text
    path = tmp_path / "mine.toml"
    path.write_text(text.replace(edit[0], edit[1]))
    result = csembed("boards", "check", str(path))
    assert result.returncode == 1
    assert str(path) in result.stderr and named in result.stderr


def test_check_gives_memory_advice_for_a_profile_that_does_not_fit(tmp_path):
    text = (boards_dir() / "wifi-piano.toml").read_text()
    path = tmp_path / "greedy.toml"
    assert 'max_bytes_in_flight = "1 MiB"' in text
    path.write_text(text.replace('max_bytes_in_flight = "1 MiB"',
                                 'max_bytes_in_flight = "200 MiB"'))
    result = csembed("boards", "check", str(path))
    assert result.returncode == 0 and "advice: memory" in result.stdout


def test_suggested_profile_for_a_small_flash_board_with_a_slow_link():
    m = Measurements(ram=256 * MiB, ram_available=200 * MiB, storage_path="/data",
                     storage_free=900 * MiB, storage_total=1024 * MiB, flash=True,
                     sha256_rate=40 * MiB, signature_rate=20 * MiB, cpus=1,
                     link_rate=1_000_000, link_rtt=0.01)
    board = parse_board(tomllib.loads(suggest(m, "piano-rev-b")), "suggested")
    assert board.ram == 256 * MiB
    assert board.memory.chunk_size == 64 * 1024 and board.memory.max_connections == 4
    assert board.memory.max_bytes_in_flight == 500_000 // 65536 * 65536  # ~0.5 s of 1 MB/s
    assert board.storage.write_policy == "flash"
    assert board.storage.quota == 900 * MiB - board.storage.free_space_reserve
    assert board.network.upload_rate == 800_000
    assert board.cpu.gzip_level == 1 and board.cpu.scan_budget == 0.05


def test_board_probe_measures_this_machine_and_its_profile_passes_the_check(tmp_path):
    sink = subprocess.Popen([sys.executable, str(TOOLS / "board-probe"), "--sink",
                             "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        address = sink.stdout.readline().split()[-1]
        out = tmp_path / "here.toml"
        result = subprocess.run([sys.executable, str(TOOLS / "board-probe"), "--peer", address,
                                 "--seconds", "0.5", "--storage", str(tmp_path), "--out",
                                 str(out), "--json", "--name", "this-machine"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        measured = json.loads(result.stdout[:result.stdout.rindex("}") + 1])
        assert measured["link_rate"] > 0 and measured["sha256_rate"] > 0
        meminfo = Path("/proc/meminfo").read_text().split()
        assert measured["ram"] == int(meminfo[meminfo.index("MemTotal:") + 1]) * 1024
        assert csembed("boards", "check", str(out)).returncode == 0
    finally:
        sink.terminate()
        sink.wait(10)
