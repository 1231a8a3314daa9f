"""The control protocol against a real daemon: UNIX socket and a pty standing in for serial.

Every command is sent as raw JSON lines (not through the client library) so
the bytes on the wire are what is tested; bad lines -- not JSON, not an
object, unknown commands, wrong argument types, an oversized line -- must
each get an error reply while the daemon keeps serving. A restart test checks
that issued access codes and the configuration persist.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    procs_fixture,
    short_tmp_fixture,
    tree,
    wait_for,
)

from csembed.access_code import AccessCode


class LineChannel:
    """Newline-delimited JSON over a byte stream given as read/write functions."""

    def __init__(self, read: Any, write: Any) -> None:
        self._read = read
        self._write = write
        self._buffer = b""

    def line(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            if time.monotonic() > deadline:
                raise AssertionError("no reply line")
            chunk = self._read()
            if not chunk:
                raise AssertionError("stream ended")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        assert line.isascii(), line
        return json.loads(line.rstrip(b"\r"))

    def send(self, data: bytes) -> None:
        self._write(data)

    def ask(self, request: dict[str, Any] | bytes) -> dict[str, Any]:
        raw = request if isinstance(request, bytes) else json.dumps(request).encode()
        self.send(raw + b"\n")
        return self.line()


def _socket_channel(path: Path) -> tuple[LineChannel, socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(path))
    return LineChannel(lambda: sock.recv(65536), sock.sendall), sock


def _exercise(chan: LineChannel, root: Path, tag: str) -> None:
    """Every command and every kind of bad line, on one channel."""
    music = root / f"music-{tag}"
    music.mkdir()
    (music / "a.mid").write_bytes(b"MThd" + bytes(range(256)) * 10)

    status = chan.ask({"type": "status"})
    for key in ("paused", "tracking", "nat_punctured", "upload_rate", "download_rate"):
        assert key in status, status
    assert "board" not in status  # the detail has its own command
    status = chan.ask({"type": "status_detail"})
    for key in ("paused", "tracking", "nat_punctured", "upload_rate", "download_rate"):
        assert key in status, status
    assert status["board"]["name"] == "wifi-piano"
    assert status["board"]["upload_limit"] == 1_000_000
    assert status["board"]["max_connections"] == 4

    assert "share_id" in chan.ask({"type": "create_share", "path": str(music)})
    assert chan.ask({"type": "create_share", "path": str(music)})["error"] == "share_exists"
    assert chan.ask({"type": "create_share", "path": str(root / "nope")})["error"] == "ENOENT"
    shares = chan.ask({"type": "list_shares"})["shares"]
    assert isinstance(shares, list)
    mine = [s for s in shares if s["path"] == str(music)]
    assert mine and isinstance(mine[0]["status"], str)

    code = chan.ask({"type": "create_access_code", "path": str(music), "mode": "read_only"})
    AccessCode.parse(code["access_code"])
    multi = chan.ask({"type": "create_access_code", "path": str(music), "mode": "read_write",
                      "max_uses": None, "expires": 60})
    AccessCode.parse(multi["access_code"])
    assert chan.ask({"type": "create_access_code", "path": str(root), "mode": "read_only"}
                    )["error"] == "no_such_share"
    assert chan.ask({"type": "create_access_code", "path": str(music), "mode": "untrusted"}
                    )["error"] == "not_supported"

    foreign = AccessCode.generate().text
    attach_dir = root / f"joined-{tag}"
    assert chan.ask({"type": "add_share", "code": "SYNC-not-a-code", "path": str(attach_dir)}
                    )["error"] == "bad_access_code"
    assert chan.ask({"type": "add_share", "code": code["access_code"],
                     "path": str(attach_dir)})["error"] == "bad_access_code"  # our own
    assert chan.ask({"type": "add_share", "code": foreign, "path": str(attach_dir)}
                    )["status"] == "attaching"
    shares = chan.ask({"type": "list_shares"})["shares"]
    assert {"path": str(attach_dir), "status": "attaching"}.items() <= \
        next(s for s in shares if s["path"] == str(attach_dir)).items()
    assert chan.ask({"type": "remove_share", "path": str(attach_dir)}) == {}

    config = chan.ask({"type": "get_config"})["config"]
    assert "upload_limit" in config and "tracker" in config
    assert chan.ask({"type": "set_config", "config": {"upload_limit": 12345,
                                                      "device_name": "piano"}}) == {}
    assert chan.ask({"type": "get_config_value", "key": "upload_limit"}) == {"value": 12345}
    assert chan.ask({"type": "status_detail"})["board"]["upload_limit"] == 12345
    assert chan.ask({"type": "set_config_value", "key": "upload_limit", "value": None}) == {}
    assert chan.ask({"type": "status_detail"})["board"]["upload_limit"] == 1_000_000
    assert chan.ask({"type": "set_config_value", "key": "colour", "value": 1}
                    )["error"] == "no_such_key"
    assert chan.ask({"type": "get_config_value", "key": "colour"})["error"] == "no_such_key"
    assert chan.ask({"type": "set_config_value", "key": "upload_limit", "value": -1}
                    )["error"] == "invalid_argument"

    assert chan.ask({"type": "list_peers"}) == {"peers": []}
    assert chan.ask({"type": "list_transfers"}) == {"transfers": []}
    assert chan.ask({"type": "pause"}) == {}
    assert chan.ask({"type": "status"})["paused"] is True
    assert chan.ask({"type": "resume"}) == {}
    assert chan.ask({"type": "status"})["paused"] is False
    assert chan.ask({"type": "rescan", "path": str(music)}) == {"shares": 1}
    def read() -> dict[str, Any] | None:
        reply = chan.ask({"type": "read_file", "path": str(music), "file": "a.mid",
                          "count": 100})
        assert reply.get("error") in (None, "not_available"), reply
        return None if "error" in reply else reply

    got = wait_for(read, "a.mid to be scanned")
    assert got["size"] == 4 + 2560 and got["eof"] is False
    assert base64.b64decode(got["data"]) == (b"MThd" + bytes(range(256)) * 10)[:100]

    # bad lines: each gets an error, and the channel keeps serving
    bad: list[tuple[bytes, str]] = [
        (b"{not json", "invalid_json"),
        (b'{"type": 1}', "invalid_request"),
        (b"[1, 2]", "invalid_request"),
        (b'{"type": "frobnicate"}', "not_understood"),
        (b'{"type": "create_share", "path": 7}', "invalid_argument"),
        (b'{"type": "create_share", "path": "relative/dir"}', "invalid_argument"),
        (b'{"type": "create_access_code", "path": "/x", "mode": "admin"}', "invalid_argument"),
        (b'{"type": "create_access_code", "path": "/x", "mode": "read_only", "max_uses": 0}',
         "invalid_argument"),
        (b'{"type": "read_file", "path": "/x"}', "invalid_argument"),
        (b'{"type": "set_config", "config": [1]}', "invalid_argument"),
        (b'{"type": "remove_share", "path": "/no/such/share"}', "no_such_share"),
        (b'{"type": "status"' + b" " * 70000 + b"}", "line_too_long"),
    ]
    for line, code_name in bad:
        reply = chan.ask(line)
        assert reply.get("error") == code_name, (line[:60], reply)
        assert isinstance(reply.get("message"), str)
    assert chan.ask({"type": "status"})["paused"] is False
    assert chan.ask({"type": "remove_share", "path": str(music)}) == {}
    assert all(s["path"] != str(music) for s in chan.ask({"type": "list_shares"})["shares"])
    assert (music / "a.mid").exists()  # removing a share never deletes its files


def test_every_command_over_the_unix_socket(procs: Procs) -> None:
    daemon = procs.daemon("d", board="wifi-piano")
    control = daemon.data / "control"
    assert stat.S_IMODE(os.stat(control).st_mode) == 0o600
    chan, sock = _socket_channel(control)
    try:
        hello = chan.line()
        assert hello["service"] == "ClearSkies Control" and hello["protocol"] == 1
        _exercise(chan, procs.root, "sock")
        assert chan.ask({"type": "stop"}) == {}
    finally:
        sock.close()
    assert daemon.proc.wait(30) == 0
    assert not control.exists()


def test_every_command_over_a_pty_serial_line(procs: Procs) -> None:
    master, slave = os.openpty()
    device = os.ttyname(slave)
    try:
        daemon = procs.daemon("d", "--control-serial", f"{device},115200", board="wifi-piano")
        chan = LineChannel(lambda: os.read(master, 65536),
                           lambda data: _write_all(master, data))
        # the handshake went out when the daemon opened the line; nothing else is queued
        assert chan.line()["service"] == "ClearSkies Control"
        _exercise(chan, procs.root, "serial")
        # the socket keeps working beside the serial line
        assert daemon.call("status")["paused"] is False
        assert chan.ask({"type": "stop"}) == {}
        assert daemon.proc.wait(30) == 0
    finally:
        os.close(master)
        os.close(slave)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def test_issued_codes_and_config_survive_a_restart(procs: Procs) -> None:
    a = procs.daemon("a")
    b = procs.daemon("b")
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    (pa / "song.mid").write_bytes(b"MThd" + os.urandom(5000))
    code = json.loads(a.cli("share", pa, "--json", "--multi-use").stdout)["access_code"]
    a.cli("config", "upload_limit", "500000")
    codes_file = a.data / "codes.json"
    assert stat.S_IMODE(os.stat(codes_file).st_mode) == 0o600
    for keys in (a.data / "keys").iterdir():
        assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    a.restart()
    assert a.call("get_config_value", key="upload_limit") == {"value": 500000}
    assert a.status()["board"]["upload_limit"] == 500000
    b.cli("config", "peers", json.dumps([a.address]))
    b.cli("attach", code, pb, "--timeout", "60")
    wait_for(lambda: tree(pa) == tree(pb), "B to sync with the code issued before the restart")
    # multi-use: still valid after one use, and still there after another restart
    a.restart()
    stored = json.loads(codes_file.read_text())["codes"]
    assert len(stored) == 1 and stored[0]["uses"] == 1 and stored[0]["max_uses"] is None


def test_a_share_with_exposed_keys_is_reported_and_the_rest_keeps_working(
        procs: Procs) -> None:
    daemon = procs.daemon("d")
    good, bad = procs.root / "good", procs.root / "bad"
    for path in (good, bad):
        path.mkdir()
        daemon.cli("share", path)
    bad_id = next(s["share_id"] for s in daemon.call("list_shares")["shares"]
                  if s["path"] == str(bad))
    assert daemon.stop() == 0
    os.chmod(daemon.data / "keys" / f"{bad_id}.json", 0o644)  # readable by others
    daemon._start()
    shares = {s["path"]: s for s in daemon.call("list_shares")["shares"]}
    assert shares[str(good)]["status"] != "error"
    assert shares[str(bad)]["status"] == "error"
    assert "other users access" in shares[str(bad)]["reason"]
    # detaching it forgets it (and its key file) for good
    daemon.cli("detach", bad)
    assert str(bad) not in {s["path"] for s in daemon.call("list_shares")["shares"]}
    assert not (daemon.data / "keys" / f"{bad_id}.json").exists()
