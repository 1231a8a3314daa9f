"""Conformance probe: check a ClearSkies peer feature by feature, as a peer sees it.

Theory of operation. The probe is an ordinary csembed client pointed at
somebody else's implementation (``HOST:PORT`` plus an access code for a
share holding at least one file). It opens a handful of connections in turn,
each for one group of checks, and records one :class:`Result` per row of
:data:`CHECKS`:

1. a connection with a freshly generated, wrong code must be refused;
2. with the real code: greeting/start, ``core.keys`` (stored in memory,
   acknowledged), the peer's ``core.ping``, gzip, then the database
   (``get_updates``), ``directory.get`` whole, by range and of unknown
   content, ``rsync.signature`` -> ``rsync.patch`` against a basis the probe
   derives from the file, and -- with a read-write code -- path safety:
   records with an escaping path and a safe path are offered together and the
   peer must fetch the safe one only (both are deleted again afterwards);
3. with the share's read-only key (a read-write member holds it): updates
   the peer sends must be signed by the read-write key, and an unsigned
   update from the read-only side must not be taken (checked on a third
   connection after an in-order barrier);
4. a message header announcing a body over the draft's 16 MiB limit must
   end the connection, without the peer waiting for the body.

A check the code's access level cannot reach is ``skip`` with the reason.
Results print as a table (``--json`` for machines); the exit status is 1 when
any check failed. Nothing here knows it is talking to csembed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from csembed.access_code import AccessCode, AccessCodeError
from csembed.database.record import GetUpdates, Record
from csembed.database.record import Limits as DatabaseLimits
from csembed.directory.sync_messages import Get
from csembed.errors import CsembedError
from csembed.protocol.core import CoreConfig, Grant, verify_message
from csembed.protocol.core_signing import SignatureError
from csembed.protocol.jsonvalues import format_timestamp
from csembed.rsync import Patcher, SignatureWriter
from csembed.security.keys import READ_ONLY, READ_WRITE, ShareKeys, new_peer_id
from makerkit.probe_session import ProbeSession, Received

EXTENSIONS = ("database", "directory", "rsync")
WIRE_MAX_BODY = 16 * 1024 * 1024
_HEX32 = re.compile(r"[0-9a-f]{32}")

CHECKS: tuple[tuple[str, str], ...] = (
    ("handshake_refuses_wrong_code", "a wrong access code is refused"),
    ("handshake", "clearskies:2 handshake with the right code completes"),
    ("greeting_start", "core.greeting / core.start: protocol 1, peer ID, extensions"),
    ("keys", "core.keys carries the granted level's keys; acknowledged"),
    ("ping", "the peer sends core.ping with a positive timeout"),
    ("gzip", "gzip negotiated and messages flow through it"),
    ("database_sync", "database.get_updates answered with valid updates"),
    ("file_get", "directory.get of a whole file; SHA-256 matches the record"),
    ("file_get_range", "directory.get with a range returns exactly those bytes"),
    ("range_beyond_end", "a range beyond the end is refused (directory.get_error)"),
    ("unknown_content", "directory.get of unknown content: directory.not_present"),
    ("rsync", "rsync.signature answered with a delta that patches to the file"),
    ("read_only_signed", "updates sent to a read-only member carry a valid signature"),
    ("read_only_unsigned_refused", "an unsigned update from a read-only member is not taken"),
    ("path_safety", "a record escaping the share is never fetched; a safe one is"),
    ("oversized_message", "a body over 16 MiB is refused at its header"),
)


@dataclass(frozen=True)
class Result:
    """Outcome of one check: ``pass``, ``fail`` or ``skip``, and why."""

    name: str
    status: str
    detail: str


@dataclass
class FileRecord:
    """A file record as the peer sent it."""

    key: str
    sha256: str
    size: int


class Probe:
    """Runs every check against one peer (see the module docstring)."""

    def __init__(self, host: str, port: int, code: AccessCode, *, timeout: float = 20.0,
                 gzip_level: int = 6) -> None:
        self.host = host
        self.port = port
        self.code = code
        self.timeout = timeout
        self.config = CoreConfig(software="csembed-conformance", name="conformance probe",
                                 extensions=EXTENSIONS, gzip_level=gzip_level,
                                 ping_interval=30.0)
        self.results: dict[str, Result] = {}
        self.peer_id = new_peer_id()
        self.share: ShareKeys | None = None
        self.level: str | None = None
        self.files: list[FileRecord] = []
        self.content: bytes | None = None
        self.target: FileRecord | None = None
        self._rev = 0

    # -- bookkeeping

    def record(self, name: str, ok: bool | None, detail: str) -> None:
        """Set a check's result (``None`` = skip); the first word counts."""
        if name in self.results:
            return
        status = "skip" if ok is None else ("pass" if ok else "fail")
        self.results[name] = Result(name, status, detail)

    def skip_rest(self, reason: str) -> None:
        """Mark every check without a result as skipped."""
        for name, _ in CHECKS:
            self.record(name, None, reason)

    def ordered(self) -> list[Result]:
        """Results in :data:`CHECKS` order."""
        return [self.results[name] for name, _ in CHECKS if name in self.results]

    # -- connections

    async def _open(self, grant: Grant) -> ProbeSession:
        return await ProbeSession.open(self.host, self.port, grant, self.config)

    async def _ready(self, session: ProbeSession) -> bool:
        return bool(await session.wait_for(lambda: session.ready, self.timeout))

    def _share_grant(self, level: str) -> Grant:
        assert self.share is not None
        return Grant.share_key(self.share, level, new_peer_id())

    # -- the checks

    async def run(self) -> list[Result]:
        """Run every check; returns the results in table order."""
        steps: list[Callable[[], Awaitable[None]]] = [
            self.check_wrong_code, self.check_session, self.check_read_only,
            self.check_oversized]
        for step in steps:
            try:
                async with asyncio.timeout(self.timeout * 6):
                    await step()
            except Exception as exc:  # a hostile peer must not crash the probe
                self.skip_rest(f"could not complete ({step.__name__}): {exc!r}")
        self.skip_rest("not reached")
        return self.ordered()

    async def check_wrong_code(self) -> None:
        grant = Grant.code_holder(AccessCode.generate(), new_peer_id())
        session = await self._open(grant)
        try:
            await session.wait_for(lambda: session.keys or session.ready, self.timeout)
            if session.keys or session.ready:
                self.record("handshake_refuses_wrong_code", False,
                            "the peer completed a handshake with a code it never issued")
            elif session.ended is None:
                self.record("handshake_refuses_wrong_code", False,
                            f"neither refused nor completed within {self.timeout:g} s")
            else:
                self.record("handshake_refuses_wrong_code", True, session.ended)
        finally:
            await session.close()

    async def check_session(self) -> None:
        session = await self._open(Grant.code_holder(self.code, self.peer_id))
        try:
            await session.wait_for(lambda: session.keys, self.timeout)
            if session.keys is None:
                self.record("handshake", False, session.ended or "no core.keys in time")
                self.skip_rest("the handshake with the right code failed")
                return
            self.record("handshake", True, f"connected to {self.host}:{self.port}")
            keys = session.keys
            granted = keys.share.level(keys.access_level)
            self.share, self.level = keys.share, keys.access_level
            await session.call("acknowledge_keys")
            if not await self._ready(session):
                self.record("keys", False, session.ended or "never became ready")
                self.skip_rest("the key exchange did not complete")
                return
            ready = session.ready
            assert ready is not None
            self.record("keys", granted.has_key and granted.signing_key is not None,
                        f"level {keys.access_level}, "
                        f"{len(keys.share.levels)} level(s) of keys")
            missing = [e for e in ("database", "directory") if e not in ready.extensions]
            ok = ready.protocol == 1 and _HEX32.fullmatch(ready.peer_id) is not None \
                and not missing
            self.record("greeting_start", ok,
                        f"protocol {ready.protocol}, software {ready.peer_software!r}, "
                        f"extensions {list(ready.extensions)}"
                        + (f"; missing {missing}" if missing else ""))
            pinged = await session.wait_for(lambda: session.pings, self.timeout)
            self.record("ping", bool(pinged) and all(
                isinstance(t, int | float) and not isinstance(t, bool) and t > 0
                for t in session.pings),
                f"timeouts {session.pings[:3]}" if pinged else "no core.ping received")
            await self.check_database(session)
            if self.target is not None:
                await self.check_files(session)
                await self.check_rsync(session, ready.extensions)
            if "gzip" in ready.extensions:
                self.record("gzip", self.results.get("database_sync", Result("", "fail", ""))
                            .status == "pass", "negotiated; database sync through it")
            else:
                self.record("gzip", None, "the peer did not negotiate gzip (optional)")
            await self.check_path_safety(session)
        finally:
            await session.close()

    async def check_database(self, session: ProbeSession) -> None:
        start = len(session.inbox)
        await session.send(GetUpdates({}).to_body())
        # the answer has no end marker: wait for the first update, then for quiet
        await session.wait_for(lambda: session.find("database.update", start), self.timeout)
        await self._quiet(session)
        updates = [r for r in session.inbox[start:] if r.type == "database.update"]
        if not updates:
            self.record("database_sync", False, session.ended or "no database.update came")
            return
        bad = []
        for item in updates:
            try:
                Record.from_body(item.body, item.message.raw, item.message.signature,
                                 DatabaseLimits())
            except CsembedError as exc:
                bad.append(str(exc))
                continue
            value = item.body.get("value")
            if item.body.get("deleted") or not isinstance(value, dict):
                continue
            sha, size = value.get("sha256"), value.get("size")
            if isinstance(sha, str) and isinstance(size, int) and item.body["key"] != "/":
                self.files.append(FileRecord(item.body["key"], sha.lower(), size))
        self.files.sort(key=lambda f: -f.size)
        self.target = self.files[0] if self.files else None
        if bad:
            self.record("database_sync", False, f"{len(bad)} invalid update(s): {bad[0]}")
        elif self.target is None:
            self.record("database_sync", False,
                        f"{len(updates)} update(s) but no file record; put a file in the share")
        else:
            self.record("database_sync", True,
                        f"{len(updates)} valid update(s), {len(self.files)} file(s)")

    async def _quiet(self, session: ProbeSession, seconds: float = 1.0) -> None:
        """Wait until no message arrived for ``seconds`` (bounded by the timeout)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.timeout
        while loop.time() < end and session.ended is None:
            if not await session.wait_for_more(seconds):
                return

    async def _get(self, session: ProbeSession, sha: str,
                   range_: tuple[int, int] | None = None) -> Received | None:
        start = len(session.inbox)
        await session.send(Get(sha, range_).to_body())
        answers = ("directory.data", "directory.not_present", "directory.get_error")
        return await session.wait_for(lambda: next(
            (r for r in session.inbox[start:] if r.type in answers and r.complete
             and str(r.body.get("sha256", "")).lower() == sha), None), self.timeout)

    async def check_files(self, session: ProbeSession) -> None:
        target = self.target
        assert target is not None
        whole = await self._get(session, target.sha256)
        if whole is None or whole.type != "directory.data":
            self.record("file_get", False, f"answer: {whole.type if whole else 'none'}")
        else:
            digest = hashlib.sha256(whole.payload).hexdigest()
            self.content = bytes(whole.payload)
            self.record("file_get", digest == target.sha256 and len(whole.payload) == target.size,
                        f"{target.key}: {len(whole.payload)} bytes, sha256 "
                        + ("matches" if digest == target.sha256 else f"is {digest[:16]}…"))
        if target.size >= 2:
            begin, count = target.size // 3, max(1, min(4000, target.size // 3))
            part = await self._get(session, target.sha256, (begin, count))
            if part is None or part.type != "directory.data":
                self.record("file_get_range", False,
                            f"answer: {part.type if part else 'none'}")
            elif self.content is None:
                self.record("file_get_range", None, "the whole file could not be fetched")
            else:
                expected = self.content[begin:begin + count]
                echoed = part.body.get("range")
                ok = bytes(part.payload) == expected and echoed == [begin, count]
                self.record("file_get_range", ok,
                            f"range [{begin}, {count}]: got {len(part.payload)} bytes, "
                            f"range field {echoed}"
                            + ("" if bytes(part.payload) == expected else ", wrong bytes"))
        else:
            self.record("file_get_range", None, "the largest file is under 2 bytes")
        beyond = await self._get(session, target.sha256, (target.size + 10, 10))
        self.record("range_beyond_end", beyond is not None and beyond.type != "directory.data",
                    f"answer: {beyond.type if beyond else 'none'}")
        unknown = hashlib.sha256(os.urandom(16)).hexdigest()
        missing = await self._get(session, unknown)
        self.record("unknown_content",
                    missing is not None and missing.type == "directory.not_present",
                    f"answer: {missing.type if missing else 'none'}")

    async def check_rsync(self, session: ProbeSession, extensions: tuple[str, ...]) -> None:
        if "rsync" not in extensions:
            self.record("rsync", None, "the peer did not negotiate rsync")
            return
        if self.content is None or self.target is None or self.target.size < 64:
            self.record("rsync", None, "needs a file of at least 64 bytes that could be fetched")
            return
        # the basis: the file with its middle changed and its tail cut
        content = self.content
        mid = len(content) // 2
        basis = content[:mid] + b"\x00csembed-probe\x00" + content[mid + 15:-len(content) // 8]
        writer = SignatureWriter(block_len=max(64, min(2048, len(basis) // 16 or 64)))
        signature = writer.update(basis) + writer.finish()
        start = len(session.inbox)
        await session.send({"type": "rsync.signature", "sha256": self.target.sha256,
                            "basis_sha256": hashlib.sha256(basis).hexdigest()}, signature)
        answers = ("rsync.patch", "directory.not_present", "directory.get_error")
        reply = await session.wait_for(lambda: next(
            (r for r in session.inbox[start:] if r.type in answers and r.complete), None),
            self.timeout)
        if reply is None or reply.type != "rsync.patch":
            self.record("rsync", False, f"answer: {reply.type if reply else 'none'}")
            return
        out = bytearray()
        try:
            patcher = Patcher(io.BytesIO(basis))
            for piece in patcher.update(bytes(reply.payload)):
                out += piece
            patcher.finish()
        except CsembedError as exc:
            self.record("rsync", False, f"the delta does not apply: {exc}")
            return
        ok = hashlib.sha256(out).hexdigest() == self.target.sha256
        self.record("rsync", ok, f"delta of {reply.payload_size} bytes for a "
                    f"{len(content)}-byte file" + ("" if ok else "; patched file differs"))

    # -- writing records of our own (read-write only)

    def _update(self, key: str, value: Any, uuid: str, *, deleted: bool = False) -> dict[str, Any]:
        self._rev += 1
        return {"type": "database.update", "key": key, "value": value, "uuid": uuid,
                "last_updated_by": self.peer_id, "last_updated_rev": self._rev,
                "update_time": format_timestamp(time.time_ns()),
                "vector_clock": {self.peer_id: self._rev}, "deleted": deleted}

    async def check_path_safety(self, session: ProbeSession) -> None:
        if self.level != READ_WRITE:
            self.record("path_safety", None, "needs a read-write code")
            return
        tag = os.urandom(4).hex()
        safe = f"probe-{tag}".encode() + b"\n"
        evil = f"escaped-{tag}".encode() + b"\n"
        files = {hashlib.sha256(safe).hexdigest(): safe, hashlib.sha256(evil).hexdigest(): evil}
        safe_sha, evil_sha = list(files)
        records = [(f"/csembed-probe-{tag}.txt", safe_sha, len(safe), os.urandom(16).hex()),
                   (f"/../csembed-escape-{tag}.txt", evil_sha, len(evil), os.urandom(16).hex())]
        served: set[str] = set()
        start = len(session.inbox)
        now = format_timestamp(time.time_ns())
        for key, sha, size, uuid in records:
            await session.send(self._update(key, {"size": size, "sha256": sha, "mtime": now,
                                                  "unix_mode": "0644"}, uuid))
            await session.send({"type": "directory.present", "sha256": sha})

        def requested() -> set[str]:
            return {str(r.body.get("sha256", "")).lower() for r in session.inbox[start:]
                    if r.type in ("directory.get", "rsync.signature")}

        async def serve_and_wait() -> bool:
            loop = asyncio.get_running_loop()
            end = loop.time() + self.timeout
            while loop.time() < end and session.ended is None:
                for item in session.inbox[start:]:
                    if item.type == "directory.get_presence" and "presence" not in served:
                        served.add("presence")
                        await session.send({"type": "directory.bloom_filter", "k_value": 1},
                                           b"\xff")
                for sha in requested() - served:
                    served.add(sha)
                    if sha in files:
                        await session.send({"type": "directory.data", "sha256": sha},
                                           files[sha])
                    else:
                        await session.send({"type": "directory.not_present", "sha256": sha})
                if safe_sha in served:
                    return True
                await session.wait_for_more(0.5)
            return False

        fetched_safe = await serve_and_wait()
        # the peer fetched the safe record it got second... after the unsafe one:
        # by now it has decided about both; give it one more quiet moment to ask
        await self._quiet(session, 1.0)
        fetched_evil = evil_sha in requested()
        for key, _sha, _size, uuid in records:  # leave the share as we found it
            await session.send(self._update(key, None, uuid, deleted=True))
        if fetched_evil:
            self.record("path_safety", False, f"the peer fetched content for {records[1][0]!r}")
        elif not fetched_safe:
            self.record("path_safety", None,
                        "the peer fetched neither record in time, so the check says nothing")
        else:
            self.record("path_safety", True,
                        f"fetched {records[0][0]!r}, never {records[1][0]!r}")

    async def check_read_only(self) -> None:
        names = ("read_only_signed", "read_only_unsigned_refused")
        if self.share is None:
            return
        try:
            grant = self._share_grant(READ_ONLY)
        except CsembedError:
            for name in names:
                self.record(name, None, "this code's keys do not include the read-only key")
            return
        session = await self._open(grant)
        writer_keys = self.share.level(READ_WRITE)
        try:
            if not await self._ready(session):
                for name in names:
                    self.record(name, False, "a read-only connection with the share key failed: "
                                + (session.ended or "timeout"))
                return
            start = len(session.inbox)
            await session.send(GetUpdates({}).to_body())
            await session.wait_for(lambda: session.find("database.update", start), self.timeout)
            await self._quiet(session)
            updates = [r for r in session.inbox[start:] if r.type == "database.update"]
            bad = []
            for item in updates:
                try:
                    verify_message(item.message, writer_keys)
                except SignatureError as exc:
                    bad.append(str(exc))
            self.record("read_only_signed", bool(updates) and not bad,
                        f"{len(updates)} update(s), {len(bad)} without a valid signature"
                        + (f": {bad[0]}" if bad else ""))
            # an unsigned write from the read-only side, then an in-order barrier
            tag = os.urandom(4).hex()
            uuid = os.urandom(16).hex()
            ro_writer = new_peer_id()
            sha = hashlib.sha256(tag.encode()).hexdigest()
            body = {"type": "database.update", "key": f"/csembed-probe-ro-{tag}.txt",
                    "value": {"size": 8, "sha256": sha,
                              "mtime": format_timestamp(time.time_ns()), "unix_mode": "0644"},
                    "uuid": uuid, "last_updated_by": ro_writer, "last_updated_rev": 1,
                    "update_time": format_timestamp(time.time_ns()),
                    "vector_clock": {ro_writer: 1}, "deleted": False}
            await session.send(body)
            barrier = hashlib.sha256(os.urandom(16)).hexdigest()
            if await self._get(session, barrier) is None:
                self.record("read_only_unsigned_refused", None,
                            "no answer to the barrier request; cannot tell")
                return
        finally:
            await session.close()
        if self.level != READ_WRITE:
            self.record("read_only_unsigned_refused", None, "needs a read-write code to look")
            return
        viewer = await self._open(self._share_grant(READ_WRITE))
        try:
            if not await self._ready(viewer):
                self.record("read_only_unsigned_refused", False,
                            "could not reconnect with the read-write key")
                return
            start = len(viewer.inbox)
            await viewer.send({"type": "database.get_updates", "since": {}})
            await viewer.wait_for(lambda: viewer.find("database.update", start), self.timeout)
            await self._quiet(viewer)
            taken = [r for r in viewer.inbox[start:]
                     if r.type == "database.update" and r.body.get("uuid") == uuid]
            self.record("read_only_unsigned_refused", not taken,
                        "the peer stored and relays the unsigned update" if taken
                        else "not stored, not relayed")
        finally:
            await viewer.close()

    async def check_oversized(self) -> None:
        if self.share is None or self.level is None:
            return
        session = await self._open(self._share_grant(self.level))
        try:
            if not await self._ready(session):
                self.record("oversized_message", None, "could not connect for the check")
                return
            session.machine.send_unit_raw(f"m{WIRE_MAX_BODY + 1}".encode())
            await session.stream.flush()
            await session.wait_for(lambda: False, self.timeout)
            self.record("oversized_message", session.ended is not None,
                        f"connection {session.ended}" if session.ended
                        else f"still open {self.timeout:g} s after the header")
        finally:
            await session.close()


# -- output


def render_table(results: list[Result]) -> str:
    """The results as an aligned text table."""
    described = dict(CHECKS)
    rows = [("check", "result", "detail")]
    rows += [(r.name, r.status.upper(), r.detail) for r in results]
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows]
    passed = sum(r.status == "pass" for r in results)
    failed = sum(r.status == "fail" for r in results)
    lines.append(f"\n{passed} passed, {failed} failed, "
                 f"{len(results) - passed - failed} skipped")
    if failed:
        lines.append("failed: " + "; ".join(described[r.name] for r in results
                                             if r.status == "fail"))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The probe's command line."""
    p = argparse.ArgumentParser(
        prog="conformance",
        description="Check a ClearSkies peer (csembed or your own firmware) feature by "
                    "feature. Give it the peer's address and an access code for a share "
                    "holding at least one file (a read-write code reaches every check).")
    p.add_argument("address", metavar="HOST:PORT", help="the peer's listening address")
    p.add_argument("code", help="an access code (SYNC…) the peer issued")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="seconds to wait for each answer (default 20)")
    p.add_argument("--no-gzip", action="store_true", help="do not offer gzip")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tools/conformance``."""
    args = build_parser().parse_args(argv)
    host, _, port = args.address.rpartition(":")
    try:
        code = AccessCode.parse(args.code)
        port_number = int(port)
    except (AccessCodeError, ValueError) as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2
    probe = Probe(host.strip("[]") or "127.0.0.1", port_number, code, timeout=args.timeout,
                  gzip_level=0 if args.no_gzip else 6)
    results = asyncio.run(probe.run())
    if args.json:
        print(json.dumps({"peer": args.address, "results": [asdict(r) for r in results]},
                         indent=2))
    else:
        print(render_table(results))
    return 1 if any(r.status == "fail" for r in results) else 0
