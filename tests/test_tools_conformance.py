"""tools/conformance: all pass against our daemon; catches each fault of a faulty peer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_daemon_support import Procs, procs_fixture, short_tmp_fixture  # noqa: F401

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))

from makerkit.conformance import CHECKS, Probe  # noqa: E402
from makerkit.faulty_peer import FaultyPeer  # noqa: E402

from csembed.access_code import AccessCode  # noqa: E402


def probe_peer(folder: Path, faults: set[str]) -> dict[str, str]:
    async def scenario() -> dict[str, str]:
        peer = FaultyPeer(folder, frozenset(faults))
        server = await peer.serve("127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            results = await Probe("127.0.0.1", port, peer.code, timeout=10).run()
        finally:
            server.close()
        return {r.name: r.status for r in results}

    return asyncio.run(scenario())


@pytest.fixture(name="folder")
def folder_fixture(tmp_path: Path) -> Path:
    (tmp_path / "recording.wav").write_bytes(os.urandom(150_000))
    (tmp_path / "note.txt").write_bytes(b"hello\n")
    return tmp_path


def test_a_correct_peer_passes_every_check(folder):
    results = probe_peer(folder, set())
    assert results == {name: "pass" for name, _ in CHECKS}


def test_each_fault_of_a_broken_peer_is_reported(folder):
    results = probe_peer(folder, {"ignore_ranges", "corrupt_byte", "unsigned_updates",
                                  "accept_unsigned", "unsafe_paths", "bad_delta"})
    failed = {name for name, status in results.items() if status == "fail"}
    assert failed == {"file_get", "file_get_range", "range_beyond_end", "rsync",
                      "read_only_signed", "read_only_unsigned_refused", "path_safety"}
    assert results["handshake"] == results["unknown_content"] == "pass"


def test_ignored_ranges_alone_fail_only_the_range_checks(folder):
    results = probe_peer(folder, {"ignore_ranges"})
    assert {n for n, s in results.items() if s == "fail"} == {"file_get_range",
                                                              "range_beyond_end"}


@pytest.mark.once
def test_probe_cli_against_our_daemon_passes_everything(procs: Procs, short_tmp: Path):
    share = short_tmp / "share"
    share.mkdir()
    (share / "take1.wav").write_bytes(os.urandom(300_000))
    (share / "notes.txt").write_text("tempo 96\n")
    daemon = procs.daemon("device", board="wifi-piano")
    code = json.loads(daemon.cli("share", share, "--mode", "read-write", "--json").stdout)
    result = subprocess.run([sys.executable, str(TOOLS / "conformance"), daemon.address,
                             code["access_code"], "--json", "--timeout", "30"],
                            capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout)
    assert {r["name"]: r["status"] for r in report["results"]} == \
        {name: "pass" for name, _ in CHECKS}, result.stdout
    assert result.returncode == 0
    assert sorted(p.name for p in share.iterdir()) == ["notes.txt", "take1.wav"]  # cleaned up


def test_probe_cli_refuses_a_mistyped_code():
    code = AccessCode.generate().text
    mistyped = code[:-1] + ("A" if code[-1] != "A" else "B")
    result = subprocess.run([sys.executable, str(TOOLS / "conformance"), "127.0.0.1:1",
                             mistyped], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "conformance:" in result.stderr


def test_something_that_is_not_a_peer_fails_the_handshake_and_nothing_crashes():
    async def scenario() -> dict[str, str]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            results = await Probe("127.0.0.1", port, AccessCode.generate(), timeout=5).run()
        finally:
            server.close()
        return {r.name: r.status for r in results}

    results = asyncio.run(scenario())
    assert results["handshake"] == "fail"
    assert {s for n, s in results.items() if n not in ("handshake",
                                                       "handshake_refuses_wrong_code")} == {"skip"}
