"""Control protocol: line framing, the command table, and the server over a UNIX socket
and a serial line (a real pty pair), plus the synchronous client."""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from csembed import __version__
from csembed.cli_commands.control_client import ControlClient, default_socket_path
from csembed.control.commands import COMMANDS, parse_request
from csembed.control.errors import (
    ControlClientError,
    ControlError,
    ControlReplyError,
    ControlRequestError,
    DaemonRunningError,
)
from csembed.control.handler import (
    DEFAULT_CODE_LIFETIME,
    DEFAULT_CODE_USES,
    MAX_READ,
    AccessMode,
    ControlHandler,
    DaemonStatus,
    FileChunk,
    ShareInfo,
    ShareMode,
)
from csembed.control.lines import Line, LineDecoder, LineTooLong, encode_line
from csembed.protocol.wire import NEED_DATA
from csembed.runtime.control_serial import parse_serial_spec
from csembed.runtime.control_server import ControlServer

TIMEOUT = 10.0
CODE = "SYNCAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
FILE_DATA = b"MThd\x00\x00\x00\x06" + bytes(range(256))


# -- the handler at the edge of this layer: records calls, answers from a script --


class RecordingHandler(ControlHandler):
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.config: dict[str, Any] = {"upload_limit": 123, "use_dht": False}

    def _record(self, name: str, **args: Any) -> None:
        self.calls.append((name, args))

    async def stop(self) -> None:
        self._record("stop")

    async def pause(self) -> None:
        self._record("pause")

    async def resume(self) -> None:
        self._record("resume")

    async def status(self) -> DaemonStatus:
        self._record("status")
        return DaemonStatus(paused=False, tracking=True, nat_punctured=False,
                            upload_rate=12834, download_rate=1049292,
                            extra={"board": "wifi-piano"})

    async def status_detail(self) -> DaemonStatus:
        self._record("status_detail")
        return DaemonStatus(paused=False, tracking=True, nat_punctured=False,
                            upload_rate=1, download_rate=2,
                            extra={"board": {"name": "wifi-piano"}})

    async def list_codes(self) -> Sequence[Mapping[str, Any]]:
        self._record("list_codes")
        return [{"code": CODE, "mode": "read_only", "uses": 0}]

    async def revoke_code(self, code: str) -> Mapping[str, Any] | None:
        self._record("revoke_code", code=code)
        return None

    async def config_sources(self) -> Sequence[Mapping[str, Any]]:
        self._record("config_sources")
        return [{"key": "upload_limit", "value": 123, "source": "stored setting"}]

    async def remove_peer(self, path: str, peer: str) -> Mapping[str, Any] | None:
        self._record("remove_peer", path=path, peer=peer)
        return {"closed": 1}

    async def allow_peer(self, path: str, peer: str) -> Mapping[str, Any] | None:
        self._record("allow_peer", path=path, peer=peer)
        return None

    async def create_share(self, path: str) -> None:
        self._record("create_share", path=path)
        if path == "/forbidden":
            raise PermissionError(errno.EPERM, "Permission denied", path)
        if path == "/boom":
            raise RuntimeError("disk on fire")
        if path == "/exists":
            raise ControlRequestError("share_exists", f"{path} is already shared")

    async def list_shares(self) -> Sequence[ShareInfo]:
        self._record("list_shares")
        return [ShareInfo("/home/a/Music", "synced", {"files": 350, "synced": True}),
                ShareInfo("/home/a/From Dave", "syncing")]

    async def add_share(self, code: str, path: str, merge: bool = True) -> None:
        if merge:
            self._record("add_share", code=code, path=path)
        else:
            self._record("add_share", code=code, path=path, merge=merge)

    async def remove_share(self, path: str) -> None:
        self._record("remove_share", path=path)

    async def create_access_code(self, path: str, mode: AccessMode, *,
                                 max_uses: int | None = DEFAULT_CODE_USES,
                                 expires: float | None = DEFAULT_CODE_LIFETIME) -> str:
        self._record("create_access_code", path=path, mode=mode, max_uses=max_uses,
                     expires=expires)
        assert isinstance(mode, AccessMode)
        return CODE

    async def get_config(self) -> Mapping[str, Any]:
        self._record("get_config")
        return self.config

    async def set_config(self, config: Mapping[str, Any]) -> None:
        self._record("set_config", config=dict(config))
        self.config.update(config)

    async def get_config_value(self, key: str) -> Any:
        self._record("get_config_value", key=key)
        if key not in self.config:
            raise ControlRequestError("no_such_key", f"no configuration key {key!r}")
        return self.config[key]

    async def set_config_value(self, key: str, value: Any) -> None:
        self._record("set_config_value", key=key, value=value)
        self.config[key] = value

    async def list_peers(self) -> Sequence[Mapping[str, Any]]:
        self._record("list_peers")
        return [{"peer": "ab" * 16, "address": "tcp:192.0.2.1:40121"}]

    async def list_transfers(self) -> Sequence[Mapping[str, Any]]:
        self._record("list_transfers")
        return []

    async def set_share_mode(self, path: str, mode: ShareMode) -> Mapping[str, Any]:
        self._record("set_share_mode", path=path, mode=mode)
        return {"path": path, "sync_mode": mode.value}

    async def override_changes(self, path: str) -> Mapping[str, Any]:
        self._record("override_changes", path=path)
        return {"path": path, "files": 2}

    async def revert_changes(self, path: str) -> Mapping[str, Any]:
        self._record("revert_changes", path=path)
        return {"path": path, "files": 1}

    async def rescan(self, path: str | None = None) -> int:
        self._record("rescan", path=path)
        return 1 if path is not None else 3

    async def read_file(self, path: str, file: str, offset: int = 0,
                        count: int = MAX_READ) -> FileChunk:
        self._record("read_file", path=path, file=file, offset=offset, count=count)
        data = FILE_DATA[offset:offset + count]
        return FileChunk(len(FILE_DATA), offset, data, offset + len(data) >= len(FILE_DATA))

    async def versions(self, path: str) -> Mapping[str, Any]:
        self._record("versions", path=path)
        return {"file": "/take1.mid", "versions": []}

    async def restore(self, path: str, version: int | None = None, at: float | None = None,
                      to: str | None = None) -> Mapping[str, Any]:
        self._record("restore", path=path, version=version, at=at, to=to)
        return {"path": to or path, "version": version or 1}


# Every command: request, expected reply, expected call recorded by the handler.
ROUND_TRIPS: list[tuple[dict[str, Any], dict[str, Any], tuple[str, dict[str, Any]]]] = [
    ({"type": "stop"}, {}, ("stop", {})),
    ({"type": "pause"}, {}, ("pause", {})),
    ({"type": "resume"}, {}, ("resume", {})),
    ({"type": "set_share_mode", "path": "/home/a/Music", "mode": "receive-only"},
     {"path": "/home/a/Music", "sync_mode": "receive_only"},
     ("set_share_mode", {"path": "/home/a/Music", "mode": ShareMode.RECEIVE_ONLY})),
    ({"type": "override_changes", "path": "/home/a/Music"}, {"path": "/home/a/Music", "files": 2},
     ("override_changes", {"path": "/home/a/Music"})),
    ({"type": "revert_changes", "path": "/home/a/Music"}, {"path": "/home/a/Music", "files": 1},
     ("revert_changes", {"path": "/home/a/Music"})),
    ({"type": "status"},
     {"paused": False, "tracking": True, "nat_punctured": False, "upload_rate": 12834,
      "download_rate": 1049292, "board": "wifi-piano"}, ("status", {})),
    ({"type": "status_detail"},
     {"paused": False, "tracking": True, "nat_punctured": False, "upload_rate": 1,
      "download_rate": 2, "board": {"name": "wifi-piano"}}, ("status_detail", {})),
    ({"type": "list_codes"}, {"codes": [{"code": CODE, "mode": "read_only", "uses": 0}]},
     ("list_codes", {})),
    ({"type": "revoke_code", "code": "SYNCABC"}, {}, ("revoke_code", {"code": "SYNCABC"})),
    ({"type": "config_sources"},
     {"settings": [{"key": "upload_limit", "value": 123, "source": "stored setting"}]},
     ("config_sources", {})),
    ({"type": "remove_peer", "path": "/home/a/Music", "peer": "abcd"}, {"closed": 1},
     ("remove_peer", {"path": "/home/a/Music", "peer": "abcd"})),
    ({"type": "allow_peer", "path": "/home/a/Music", "peer": "abcd"}, {},
     ("allow_peer", {"path": "/home/a/Music", "peer": "abcd"})),
    ({"type": "add_share", "code": CODE, "path": "/home/b", "merge": False}, {},
     ("add_share", {"code": CODE, "path": "/home/b", "merge": False})),
    ({"type": "create_share", "path": "/home/a/Documents"}, {},
     ("create_share", {"path": "/home/a/Documents"})),
    ({"type": "list_shares"},
     {"shares": [{"path": "/home/a/Music", "status": "synced", "files": 350, "synced": True},
                 {"path": "/home/a/From Dave", "status": "syncing"}]},
     ("list_shares", {})),
    ({"type": "add_share", "code": CODE, "path": "/home/a/From Dave", "unknown": 1}, {},
     ("add_share", {"code": CODE, "path": "/home/a/From Dave"})),
    ({"type": "remove_share", "path": "/home/a/From Dave"}, {},
     ("remove_share", {"path": "/home/a/From Dave"})),
    ({"type": "create_access_code", "mode": "read_only", "path": "/home/a/Music"},
     {"access_code": CODE},
     ("create_access_code", {"path": "/home/a/Music", "mode": AccessMode.READ_ONLY,
                             "max_uses": 1, "expires": 86400.0})),
    ({"type": "create_access_code", "mode": "read_write", "path": "/home/a/Music",
      "max_uses": None, "expires": 60},
     {"access_code": CODE},
     ("create_access_code", {"path": "/home/a/Music", "mode": AccessMode.READ_WRITE,
                             "max_uses": None, "expires": 60.0})),
    ({"type": "create_access_code", "mode": "untrusted", "path": "/s", "max_uses": 5,
      "expires": None},
     {"access_code": CODE},
     ("create_access_code", {"path": "/s", "mode": AccessMode.UNTRUSTED, "max_uses": 5,
                             "expires": None})),
    ({"type": "get_config"}, {"config": {"upload_limit": 123, "use_dht": False}},
     ("get_config", {})),
    ({"type": "set_config", "config": {"use_dht": True}}, {},
     ("set_config", {"config": {"use_dht": True}})),
    ({"type": "get_config_value", "key": "upload_limit"}, {"value": 123},
     ("get_config_value", {"key": "upload_limit"})),
    ({"type": "set_config_value", "key": "tracker", "value": None}, {},
     ("set_config_value", {"key": "tracker", "value": None})),
    ({"type": "list_peers"}, {"peers": [{"peer": "ab" * 16, "address": "tcp:192.0.2.1:40121"}]},
     ("list_peers", {})),
    ({"type": "list_transfers"}, {"transfers": []}, ("list_transfers", {})),
    ({"type": "rescan"}, {"shares": 3}, ("rescan", {"path": None})),
    ({"type": "rescan", "path": "/home/a/Music"}, {"shares": 1},
     ("rescan", {"path": "/home/a/Music"})),
    ({"type": "read_file", "path": "/home/a/Music", "file": "take1.mid"},
     {"size": 264, "offset": 0, "data": base64.b64encode(FILE_DATA).decode(), "eof": True},
     ("read_file", {"path": "/home/a/Music", "file": "take1.mid", "offset": 0,
                    "count": 1 << 20})),
    ({"type": "read_file", "path": "/home/a/Music", "file": "/sub/take1.mid", "offset": 4,
      "count": 4},
     {"size": 264, "offset": 4, "data": "AAAABg==", "eof": False},
     ("read_file", {"path": "/home/a/Music", "file": "/sub/take1.mid", "offset": 4,
                    "count": 4})),
    ({"type": "versions", "path": "/home/a/Music/take1.mid"},
     {"file": "/take1.mid", "versions": []}, ("versions", {"path": "/home/a/Music/take1.mid"})),
    ({"type": "restore", "path": "/home/a/Music/take1.mid"},
     {"path": "/home/a/Music/take1.mid", "version": 1},
     ("restore", {"path": "/home/a/Music/take1.mid", "version": None, "at": None,
                  "to": None})),
    ({"type": "restore", "path": "/m/a", "version": 3, "to": "/tmp/a"},
     {"path": "/tmp/a", "version": 3},
     ("restore", {"path": "/m/a", "version": 3, "at": None, "to": "/tmp/a"})),
    ({"type": "restore", "path": "/m/a", "at": 1796398200},
     {"path": "/m/a", "version": 1},
     ("restore", {"path": "/m/a", "version": None, "at": 1796398200.0, "to": None})),
]

BAD_REQUESTS: list[tuple[bytes, str, str]] = [
    (b"{not json", "invalid_json", "not valid JSON"),
    (b'{"type":"status","type":"stop"}', "invalid_json", "duplicate key"),
    (b'{"type":"status","x":NaN}', "invalid_json", "NaN"),
    (b"\xff\xfe", "invalid_json", "not UTF-8"),
    (b"[1,2]", "invalid_request", "not an array"),
    (b'"status"', "invalid_request", "not a string"),
    (b"{}", "invalid_request", "no 'type'"),
    (b'{"type":7}', "invalid_request", "'type' that is a number"),
    (b'{"type":"reboot_the_moon"}', "not_understood", "unknown command 'reboot_the_moon'"),
    (b'{"type":"create_share"}', "invalid_argument", "'path' is required"),
    (b'{"type":"create_share","path":42}', "invalid_argument", "must be a string, not a number"),
    (b'{"type":"create_share","path":"relative/dir"}', "invalid_argument", "absolute path"),
    (b'{"type":"create_share","path":""}', "invalid_argument", "must not be empty"),
    (b'{"type":"create_share","path":"/a\\nb"}', "invalid_argument", "control characters"),
    (b'{"type":"create_access_code","path":"/x","mode":"admin"}', "invalid_argument",
     "read_write, read_only, untrusted"),
    (b'{"type":"set_config","config":[1]}', "invalid_argument", "must be an object"),
    (b'{"type":"set_config_value","key":"k"}', "invalid_argument", "'value' is required"),
    (b'{"type":"add_share","code":null,"path":"/x"}', "invalid_argument", "not null"),
    # create_access_code's options
    (b'{"type":"create_access_code","path":"/x","mode":"read_only","max_uses":0}',
     "invalid_argument", "'max_uses' must be an integer from 1 up or null, got 0"),
    (b'{"type":"create_access_code","path":"/x","mode":"read_only","max_uses":"2"}',
     "invalid_argument", "'max_uses' must be an integer from 1 up or null, not a string"),
    (b'{"type":"create_access_code","path":"/x","mode":"read_only","max_uses":2.5}',
     "invalid_argument", "'max_uses' must be an integer from 1 up or null, not a number"),
    (b'{"type":"create_access_code","path":"/x","mode":"read_only","max_uses":true}',
     "invalid_argument", "'max_uses' must be an integer from 1 up or null, not a boolean"),
    (b'{"type":"create_access_code","path":"/x","mode":"read_only","expires":"1h"}',
     "invalid_argument", "'expires' must be a number of seconds or null, not a string"),
    (b'{"type":"create_access_code","path":"/x","mode":"read_only","expires":false}',
     "invalid_argument", "'expires' must be a number of seconds or null, not a boolean"),
    (b'{"type":"create_access_code","path":"/x","mode":"read_only","expires":0}',
     "invalid_argument", "'expires' must be more than 0"),
    (b'{"type":"create_access_code","path":"/x","mode":"read_only","expires":-5}',
     "invalid_argument", "'expires' must be more than 0"),
    (b'{"type":"create_access_code","path":"/x","mode":"read_only","expires":1e12}',
     "invalid_argument", "less than 1000000000 seconds"),
    (b'{"type":"create_access_code","path":"/x","max_uses":3}', "invalid_argument",
     "'mode' is required"),
    # rescan
    (b'{"type":"rescan","path":5}', "invalid_argument", "'path' must be a string, not a number"),
    (b'{"type":"rescan","path":null}', "invalid_argument", "'path' must be a string, not null"),
    (b'{"type":"rescan","path":"music"}', "invalid_argument", "absolute path"),
    # read_file
    (b'{"type":"read_file","path":"/x"}', "invalid_argument", "read_file: 'file' is required"),
    (b'{"type":"read_file","file":"a"}', "invalid_argument", "read_file: 'path' is required"),
    (b'{"type":"read_file","path":"/x","file":["a"]}', "invalid_argument",
     "'file' must be a string, not an array"),
    (b'{"type":"read_file","path":"/x","file":""}', "invalid_argument",
     "'file' must not be empty"),
    (b'{"type":"read_file","path":"/x","file":"a\\u0000b"}', "invalid_argument",
     "'file' must not contain control characters"),
    (b'{"type":"read_file","path":"/x","file":"a","offset":-1}', "invalid_argument",
     "'offset' must be an integer from 0 to 9223372036854775807, got -1"),
    (b'{"type":"read_file","path":"/x","file":"a","offset":"0"}', "invalid_argument",
     "'offset' must be an integer from 0 to 9223372036854775807, not a string"),
    (b'{"type":"read_file","path":"/x","file":"a","offset":null}', "invalid_argument",
     "'offset' must be an integer from 0 to 9223372036854775807, not null"),
    (b'{"type":"read_file","path":"/x","file":"a","offset":1.5}', "invalid_argument",
     "'offset' must be an integer"),
    (b'{"type":"read_file","path":"/x","file":"a","count":0}', "invalid_argument",
     "'count' must be an integer from 1 to 1048576, got 0"),
    (b'{"type":"read_file","path":"/x","file":"a","count":1048577}', "invalid_argument",
     "'count' must be an integer from 1 to 1048576, got 1048577"),
    (b'{"type":"read_file","path":"/x","file":"a","count":true}', "invalid_argument",
     "'count' must be an integer from 1 to 1048576, not a boolean"),
    # versions / restore
    (b'{"type":"versions","path":"rel/a"}', "invalid_argument",
     "versions: 'path' must be an absolute path"),
    (b'{"type":"restore","path":"/m/a","version":0}', "invalid_argument",
     "restore: 'version' must be an integer from 1 up, got 0"),
    (b'{"type":"restore","path":"/m/a","at":"yesterday"}', "invalid_argument",
     "restore: 'at' must be a time in seconds since 1970"),
    (b'{"type":"restore","path":"/m/a","at":-5}', "invalid_argument",
     "restore: 'at' must be a time in seconds since 1970"),
    (b'{"type":"restore","path":"/m/a","to":"b"}', "invalid_argument",
     "restore: 'to' must be an absolute path"),
]


def test_the_table_covers_every_handler_method() -> None:
    names = {name for name in vars(ControlHandler) if not name.startswith("_")}
    assert set(COMMANDS) == names
    assert {request["type"] for request, _, _ in ROUND_TRIPS} == names


# -- line framing -------------------------------------------------------------


def test_lines_with_lf_and_crlf() -> None:
    decoder = LineDecoder(max_line=10)
    decoder.receive_data(b'{"a":1}\r\n{"b":2}\n\npartial')
    assert list(decoder.events()) == [Line(b'{"a":1}'), Line(b'{"b":2}'), Line(b"")]
    decoder.receive_data(b"\n")
    assert decoder.next_event() == Line(b"partial")
    assert decoder.next_event() is NEED_DATA


def test_too_long_line_is_reported_once_and_skipped() -> None:
    decoder = LineDecoder(max_line=10)
    decoder.receive_data(b"0123456789\n")  # exactly the limit is fine
    assert decoder.next_event() == Line(b"0123456789")
    decoder.receive_data(b"0123456789" * 3)
    assert decoder.next_event() == LineTooLong(10)
    decoder.receive_data(b"more of the same line")
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b" end\nnext\n")
    assert list(decoder.events()) == [Line(b"next")]
    decoder.receive_data(b"0123456789AB\nok\n")  # too long but complete in one piece
    assert list(decoder.events()) == [LineTooLong(10), Line(b"ok")]


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=20),
       st.lists(st.integers(1, 17), min_size=1, max_size=10))
def test_any_split_gives_the_same_events(lines: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    whole = LineDecoder(max_line=20)
    whole.receive_data(stream)
    expected = list(whole.events())
    assert len(expected) == len(lines)
    pieces = LineDecoder(max_line=20)
    got: list[Any] = []
    position, i = 0, 0
    while position < len(stream):
        step = cuts[i % len(cuts)]
        pieces.receive_data(stream[position:position + step])
        got.extend(pieces.events())
        position += step
        i += 1
    assert got == expected


def test_replies_are_one_ascii_line() -> None:
    line = encode_line({"message": "line\nbreak and ünïcode \u2028"})
    assert line.count(b"\n") == 1 and line.endswith(b"\n") and line.isascii()
    assert json.loads(line) == {"message": "line\nbreak and ünïcode \u2028"}


def test_parse_request_types_its_arguments() -> None:
    request = parse_request(b'{"type":"create_access_code","path":"/s","mode":"untrusted"}')
    assert request.command.name == "create_access_code"
    assert request.args == {"path": "/s", "mode": AccessMode.UNTRUSTED}


def test_optional_arguments_are_passed_only_when_given() -> None:
    options = parse_request(b'{"type":"create_access_code","path":"/s","mode":"read_only",'
                            b'"max_uses":null,"expires":90}')
    assert options.args == {"path": "/s", "mode": AccessMode.READ_ONLY, "max_uses": None,
                            "expires": 90.0}
    assert isinstance(options.args["expires"], float)
    assert parse_request(b'{"type":"rescan"}').args == {}
    assert parse_request(b'{"type":"read_file","path":"/s","file":"a/b",'
                         b'"offset":0,"count":1048576}').args == {
        "path": "/s", "file": "a/b", "offset": 0, "count": MAX_READ}
    assert parse_request(b'{"type":"read_file","path":"/s","file":"a"}').args == {
        "path": "/s", "file": "a"}


def test_a_handler_without_the_options_still_serves_requests_without_them() -> None:
    class Plain(ControlHandler):
        async def create_access_code(self, path: str, mode: AccessMode,  # type: ignore[override]
                                     ) -> str:
            return CODE

    async def main() -> None:
        server = ControlServer(Plain())
        plain = await server.dispatch(b'{"type":"create_access_code","path":"/s",'
                                      b'"mode":"read_only"}')
        assert json.loads(plain) == {"access_code": CODE}

    asyncio.run(main())


@pytest.mark.parametrize("line, code, fragment", BAD_REQUESTS)
def test_parse_request_errors(line: bytes, code: str, fragment: str) -> None:
    with pytest.raises(ControlRequestError) as info:
        parse_request(line)
    assert info.value.code == code and fragment in info.value.message


# -- over a UNIX socket -------------------------------------------------------


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # A short path: sun_path is limited to 107 bytes and pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="csctl", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class LineClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            line = await self.reader.readline()
        assert line.endswith(b"\n"), line
        value = json.loads(line)
        assert isinstance(value, dict)
        return value

    async def ask(self, request: dict[str, Any] | bytes) -> dict[str, Any]:
        data = request if isinstance(request, bytes) else json.dumps(request).encode()
        await self.send(data + b"\n")
        return await self.reply()


@asynccontextmanager
async def serving(path: Path, handler: ControlHandler | None = None,
                  **kw: Any) -> AsyncIterator[tuple[ControlServer, LineClient]]:
    server = ControlServer(handler or RecordingHandler(), **kw)
    listener = await server.start_unix(path)
    reader, writer = await asyncio.open_unix_connection(str(path))
    client = LineClient(reader, writer)
    try:
        yield server, client
    finally:
        writer.close()
        await listener.close()


def test_handshake_and_every_command_round_trips(sock_dir: Path) -> None:
    async def main() -> None:
        handler = RecordingHandler()
        async with serving(sock_dir / "control", handler) as (_, client):
            assert await client.reply() == {"service": "ClearSkies Control",
                                            "software": f"csembed {__version__}",
                                            "protocol": 1}
            for request, expected, call in ROUND_TRIPS:
                handler.calls.clear()
                assert await client.ask(request) == expected, request
                assert handler.calls == [call]

    asyncio.run(main())


def test_pipelined_requests_are_answered_in_order(sock_dir: Path) -> None:
    async def main() -> None:
        async with serving(sock_dir / "control") as (_, client):
            await client.reply()
            batch = [b'{"type":"pause"}', b"{oops", b'{"type":"get_config_value","key":"x"}',
                     b'{"type":"get_config_value","key":"upload_limit"}', b'{"type":"nope"}',
                     b'{"type":"resume"}']
            await client.send(b"\n".join(batch) + b"\n")
            replies = [await client.reply() for _ in batch]
            assert replies[0] == {} and replies[5] == {}
            assert replies[1]["error"] == "invalid_json"
            assert replies[2]["error"] == "no_such_key"
            assert replies[3] == {"value": 123}
            assert replies[4]["error"] == "not_understood"

    asyncio.run(main())


def test_bad_requests_get_errors_and_service_continues(sock_dir: Path) -> None:
    async def main() -> None:
        handler = RecordingHandler()
        async with serving(sock_dir / "control", handler) as (_, client):
            await client.reply()
            for line, code, fragment in BAD_REQUESTS:
                reply = await client.ask(line)
                assert reply["error"] == code and fragment in reply["message"], line
            assert handler.calls == []  # nothing malformed reached the handler
            assert (await client.ask({"type": "status"}))["tracking"] is True

    asyncio.run(main())


def test_oversized_line_is_refused_and_skipped(sock_dir: Path) -> None:
    async def main() -> None:
        async with serving(sock_dir / "control", max_line=64 * 1024) as (_, client):
            await client.reply()
            huge = b'{"type":"create_share","path":"/' + b"x" * 100_000
            for i in range(0, len(huge), 8192):
                await client.send(huge[i:i + 8192])
            reply = await client.reply()  # reported before the line even ends
            assert reply["error"] == "line_too_long" and "65536" in reply["message"]
            await client.send(b'"}\n{"type":"pause"}\n')
            assert await client.reply() == {}

    asyncio.run(main())


def test_handler_failures_become_error_replies(sock_dir: Path) -> None:
    async def main() -> None:
        async with serving(sock_dir / "control") as (_, client):
            await client.reply()
            eperm = await client.ask({"type": "create_share", "path": "/forbidden"})
            assert eperm == {"error": "EPERM", "message": "Permission denied '/forbidden'"}
            boom = await client.ask({"type": "create_share", "path": "/boom"})
            assert boom["error"] == "internal_error" and "disk on fire" in boom["message"]
            exists = await client.ask({"type": "create_share", "path": "/exists"})
            assert exists == {"error": "share_exists", "message": "/exists is already shared"}
            assert await client.ask({"type": "pause"}) == {}

    asyncio.run(main())


def test_base_handler_answers_not_supported(sock_dir: Path) -> None:
    async def main() -> None:
        async with serving(sock_dir / "control", ControlHandler()) as (_, client):
            await client.reply()
            for request, _, _ in ROUND_TRIPS:
                reply = await client.ask(request)
                assert reply["error"] == "not_supported", request

    asyncio.run(main())


def test_socket_is_private_and_removed_on_close(sock_dir: Path) -> None:
    async def main() -> None:
        path = sock_dir / "new" / "clearskies" / "control"
        server = ControlServer(RecordingHandler())
        old = os.umask(0)  # the most permissive umask must not matter
        try:
            listener = await server.start_unix(path)
        finally:
            os.umask(old)
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        await listener.close()
        assert not path.exists()

    asyncio.run(main())


def test_second_server_refuses_to_start(sock_dir: Path) -> None:
    async def main() -> None:
        path = sock_dir / "control"
        async with serving(path):
            with pytest.raises(DaemonRunningError, match="another daemon is running"):
                await ControlServer(RecordingHandler()).start_unix(path)
            assert path.exists()

    asyncio.run(main())


def leave_stale_socket(path: Path) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays behind, as after a crash
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_stale_socket_is_cleaned_up(sock_dir: Path) -> None:
    path = sock_dir / "control"
    leave_stale_socket(path)

    async def main() -> None:
        async with serving(path) as (_, client):
            assert (await client.reply())["service"] == "ClearSkies Control"

    asyncio.run(main())


def test_a_file_that_is_not_a_socket_is_left_alone(sock_dir: Path) -> None:
    path = sock_dir / "control"
    path.write_text("precious")

    async def main() -> None:
        with pytest.raises(ControlError, match="not a socket"):
            await ControlServer(RecordingHandler()).start_unix(path)

    asyncio.run(main())
    assert path.read_text() == "precious"


def test_too_long_socket_path_is_a_clear_error(sock_dir: Path) -> None:
    async def main() -> None:
        with pytest.raises(ControlError, match="too long for a UNIX socket"):
            await ControlServer(RecordingHandler()).start_unix(sock_dir / ("x" * 120))

    asyncio.run(main())


def test_connections_beyond_the_limit_are_told_busy(sock_dir: Path) -> None:
    async def main() -> None:
        path = sock_dir / "control"
        async with serving(path, max_connections=1) as (_, first):
            await first.reply()
            reader, writer = await asyncio.open_unix_connection(str(path))
            second = LineClient(reader, writer)
            assert (await second.reply())["service"] == "ClearSkies Control"
            assert (await second.reply())["error"] == "busy"
            assert await reader.read() == b""
            writer.close()
            assert await first.ask({"type": "pause"}) == {}

    asyncio.run(main())


# -- the synchronous client ---------------------------------------------------


def test_client_library_against_the_server(sock_dir: Path) -> None:
    path = sock_dir / "control"

    def use_client() -> None:
        with ControlClient(path, timeout=TIMEOUT) as daemon:
            assert daemon.handshake is not None and daemon.handshake.protocol == 1
            assert daemon.call("status")["download_rate"] == 1049292
            assert daemon.call("create_access_code", path="/s", mode="read_write") == {
                "access_code": CODE}
            assert daemon.request("bogus")["error"] == "not_understood"
            with pytest.raises(ControlReplyError) as info:
                daemon.call("create_share", path="relative")
            assert info.value.code == "invalid_argument"

    async def main() -> None:
        async with serving(path):
            await asyncio.to_thread(use_client)

    asyncio.run(main())


def test_client_says_no_daemon_is_running(sock_dir: Path) -> None:
    missing = sock_dir / "control"
    with pytest.raises(ControlClientError, match=f"no daemon running at {missing}"):
        ControlClient(missing).connect()
    leave_stale_socket(missing)
    with pytest.raises(ControlClientError, match="no daemon running at"):
        ControlClient(missing).call("status")


def test_default_socket_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/data/home")
    assert default_socket_path() == Path("/data/home/clearskies/control")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", "/home/me")
    assert default_socket_path() == Path("/home/me/.local/share/clearskies/control")


# -- over a serial line: a real pseudo-terminal pair ------------------------


def test_parse_serial_spec() -> None:
    assert parse_serial_spec("/dev/ttyGS0") == ("/dev/ttyGS0", 115200)
    assert parse_serial_spec("/dev/ttyAMA0,9600") == ("/dev/ttyAMA0", 9600)
    for bad in (",9600", "/dev/ttyS0,fast", "/dev/ttyS0,10"):
        with pytest.raises(ControlError):
            parse_serial_spec(bad)


class MasterEnd:
    """The test's side of the pty: raw reads and writes on the master fd."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.buffer = b""

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                await asyncio.sleep(0.001)

    async def line(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(TIMEOUT):
            while b"\n" not in self.buffer:
                ready = asyncio.Event()
                loop.add_reader(self.fd, ready.set)
                try:
                    await ready.wait()
                finally:
                    loop.remove_reader(self.fd)
                self.buffer += os.read(self.fd, 65536)
        line, _, self.buffer = self.buffer.partition(b"\n")
        value = json.loads(line)
        assert isinstance(value, dict)
        return value


def test_control_over_a_serial_line() -> None:
    master, slave = os.openpty()
    device = os.ttyname(slave)
    os.close(slave)  # the server opens the device itself, through pyserial

    async def main() -> None:
        handler = RecordingHandler()
        server = ControlServer(handler, max_line=4096)
        serving_task = asyncio.create_task(server.serve_serial(device, 115200))
        end = MasterEnd(master)
        try:
            assert (await end.line())["service"] == "ClearSkies Control"
            await end.write(b'{"type":"status"}\r\n\r\n{"type":"list_shares"}\n')
            assert (await end.line())["upload_rate"] == 12834
            assert (await end.line())["shares"][0] == {
                "path": "/home/a/Music", "status": "synced", "files": 350, "synced": True}
            await end.write(b"{bad\n" + b"y" * 10_000 + b'\n{"type":"nope"}\n')
            assert (await end.line())["error"] == "invalid_json"
            assert (await end.line())["error"] == "line_too_long"
            assert (await end.line())["error"] == "not_understood"
            request = {"type": "add_share", "code": CODE, "path": "/srv/piano"}
            await end.write(json.dumps(request).encode() + b"\n")
            assert await end.line() == {}
            assert handler.calls[-1] == ("add_share", {"code": CODE, "path": "/srv/piano"})
        finally:
            os.close(master)  # hang up: the server sees the line go away and returns
        async with asyncio.timeout(TIMEOUT):
            await serving_task

    asyncio.run(main())


def test_opening_a_missing_serial_device_is_a_clear_error() -> None:
    async def main() -> None:
        with pytest.raises(ControlError, match="cannot open serial device /dev/nonexistent"):
            await ControlServer(RecordingHandler()).serve_serial("/dev/nonexistent")

    asyncio.run(main())
