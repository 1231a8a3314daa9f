"""A small ClearSkies peer with faults that can be switched on, to test the probe.

Theory of operation. It is not the csembed daemon: it is the least a peer
needs to answer the conformance probe, built from csembed's protocol modules
(the secure session and core via :func:`~csembed.runtime.session_stream.serve`,
wire messages, rsync deltas). It serves the files of one folder, read once at
start, as one share whose read-write and read-only keys it holds, and issues
one multi-use read-write access code. Per connection it answers
``database.get_updates`` with one update per file (signed when the connection
is read-only), ``directory.get`` (whole or by range), ``rsync.signature``
(with a delta), and takes ``database.update`` from read-write members, or
signed ones from read-only members, then fetches the content of safe paths.

Each fault in :data:`FAULTS` breaks one of those rules the way a firmware bug
would, so a test can show that the probe notices.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csembed.access_code import AccessCode
from csembed.protocol.core import CoreConfig, Ready, verify_message
from csembed.protocol.core_access import CredentialRegistry
from csembed.protocol.core_signing import SignatureError
from csembed.protocol.jsonvalues import format_timestamp
from csembed.protocol.wire import Message, PayloadChunk, PayloadEnd
from csembed.rsync import DeltaWriter, RsyncError, Signature
from csembed.runtime.session_stream import SessionStream, serve
from csembed.security.keys import READ_ONLY, READ_WRITE, ShareKeys, new_peer_id

FAULTS: dict[str, str] = {
    "ignore_ranges": "directory.get: the range is ignored and the whole file sent",
    "corrupt_byte": "directory.data: one byte of every payload is flipped",
    "unsigned_updates": "updates go unsigned to read-only members",
    "accept_unsigned": "unsigned updates from read-only members are stored and relayed",
    "unsafe_paths": "records with '..' in their path are fetched like any other",
    "bad_delta": "rsync.patch carries the delta of different content",
}


@dataclass
class FaultyPeer:
    """The peer's state: its files, records, keys and faults."""

    root: Path
    faults: frozenset[str]
    share: ShareKeys = field(default_factory=ShareKeys.generate)
    peer_id: str = field(default_factory=new_peer_id)
    code: AccessCode = field(default_factory=AccessCode.generate)
    content: dict[str, bytes] = field(default_factory=dict)  #: sha256 -> bytes
    updates: list[dict[str, Any]] = field(default_factory=list)  #: bodies of every record

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS)}")
        now = format_timestamp(time.time_ns())
        for rev, path in enumerate(sorted(p for p in self.root.iterdir() if p.is_file()), 1):
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            self.content[sha] = data
            self.updates.append({
                "type": "database.update", "key": f"/{path.name}",
                "value": {"size": len(data), "sha256": sha, "mtime": now, "unix_mode": "0644"},
                "uuid": os.urandom(16).hex(), "last_updated_by": self.peer_id,
                "last_updated_rev": rev, "update_time": now,
                "vector_clock": {self.peer_id: rev}, "deleted": False})

    def registry(self) -> CredentialRegistry:
        """Who may connect: the share's keys and the issued code (any number of uses)."""
        registry = CredentialRegistry()
        registry.add_share(self.share, self.peer_id)
        registry.codes.issue(self.code, self.share, READ_WRITE, self.peer_id,
                             now=asyncio.get_running_loop().time(), max_uses=None)
        return registry

    async def serve(self, host: str, port: int) -> asyncio.Server:
        """Listen for connections."""
        config = CoreConfig(software="faulty-peer", extensions=("database", "directory", "rsync"),
                            gzip_level=1, ping_interval=30.0)
        return await serve(host, port, self.registry(), self._connection, config)

    async def _connection(self, stream: SessionStream) -> None:
        ready: Ready | None = None
        current: Message | None = None
        payload = bytearray()
        while (event := await stream.next_event()) is not None:
            if isinstance(event, Ready):
                ready = event
            elif isinstance(event, Message) and ready is not None:
                if event.has_payload:
                    current, payload = event, bytearray()
                else:
                    await self._on_message(stream, ready, event, b"")
            elif isinstance(event, PayloadChunk):
                payload += event.data
            elif isinstance(event, PayloadEnd) and current is not None and ready is not None:
                await self._on_message(stream, ready, current, bytes(payload))
                current = None
            elif not isinstance(event, Message | PayloadChunk | PayloadEnd):
                if type(event).__name__ in ("SessionClosed", "SessionFailed"):
                    return

    async def _on_message(self, stream: SessionStream, ready: Ready, message: Message,
                          payload: bytes) -> None:
        kind = message.type
        read_only = ready.access_level == READ_ONLY
        if kind == "database.get_updates":
            sign = read_only and "unsigned_updates" not in self.faults
            for body in list(self.updates):
                await stream.send_message(
                    body, sign_with=self.share.level(READ_WRITE) if sign else None)
        elif kind == "database.update":
            if read_only:
                try:
                    verify_message(message, self.share.level(READ_WRITE))
                except SignatureError:
                    if "accept_unsigned" not in self.faults:
                        return
            self.updates.append(message.body)
            value = message.body.get("value")
            key = str(message.body.get("key", ""))
            unsafe = ".." in key.split("/")
            if isinstance(value, dict) and isinstance(value.get("sha256"), str) \
                    and not message.body.get("deleted") \
                    and (not unsafe or "unsafe_paths" in self.faults):
                await stream.send_message({"type": "directory.get", "sha256": value["sha256"]})
        elif kind == "directory.get":
            await self._send_data(stream, message.body)
        elif kind == "rsync.signature":
            await self._send_patch(stream, message.body, payload)

    async def _send_data(self, stream: SessionStream, body: dict[str, Any]) -> None:
        sha = str(body.get("sha256", "")).lower()
        data = self.content.get(sha)
        if data is None:
            await stream.send_message({"type": "directory.not_present", "sha256": sha})
            return
        reply: dict[str, Any] = {"type": "directory.data", "sha256": sha}
        range_ = body.get("range")
        if isinstance(range_, list) and len(range_) == 2 and "ignore_ranges" not in self.faults:
            start, count = range_
            if start >= len(data):
                await stream.send_message({"type": "directory.get_error", "sha256": sha,
                                           "message": "range beyond the end of the file"})
                return
            data = data[start:start + count]
            reply["range"] = [start, count]
        if "corrupt_byte" in self.faults and data:
            data = bytes([data[0] ^ 0x55]) + data[1:]
        await self._send_payload(stream, reply, data)

    async def _send_patch(self, stream: SessionStream, body: dict[str, Any],
                          signature: bytes) -> None:
        sha = str(body.get("sha256", "")).lower()
        data = self.content.get(sha)
        if data is None:
            await stream.send_message({"type": "directory.not_present", "sha256": sha})
            return
        if "bad_delta" in self.faults:
            data = data[::-1]
        try:
            writer = DeltaWriter(Signature.from_bytes(signature))
            delta = writer.update(data) + writer.finish()
        except RsyncError as exc:
            await stream.send_message({"type": "directory.get_error", "sha256": sha,
                                       "message": str(exc)})
            return
        await self._send_payload(stream, {"type": "rsync.patch", "sha256": sha}, delta)

    @staticmethod
    async def _send_payload(stream: SessionStream, body: dict[str, Any], data: bytes) -> None:
        await stream.send_message(body, payload=True)
        for start in range(0, len(data), 65536):
            await stream.send_chunk(data[start:start + 65536])
        await stream.send_payload_end()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tools/faulty-peer``: serve until interrupted."""
    p = argparse.ArgumentParser(
        prog="faulty-peer",
        description="A minimal ClearSkies peer with switchable faults, to see the conformance "
                    "probe catch them. Prints one JSON line with its address and code.",
        epilog="faults: " + "; ".join(f"{k}: {v}" for k, v in FAULTS.items()))
    p.add_argument("folder", type=Path, help="serve the files in this folder")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    p.add_argument("--fault", action="append", default=[], choices=sorted(FAULTS),
                   help="switch a fault on (repeatable)")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")

    async def run() -> None:
        peer = FaultyPeer(args.folder, frozenset(args.fault))
        server = await peer.serve(host, int(port))
        address = server.sockets[0].getsockname()
        print(json.dumps({"address": f"{address[0]}:{address[1]}", "code": peer.code.text,
                          "faults": sorted(peer.faults)}), flush=True)
        await server.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
