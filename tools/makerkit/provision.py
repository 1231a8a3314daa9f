"""Serial provisioning: pair and check a device over its serial console.

Theory of operation. The device runs ``csembed daemon --control-serial
/dev/ttyGS0`` (a USB gadget serial port, a UART); the host opens its end of
the line (``/dev/ttyACM0``) with pyserial and speaks the control protocol
(``protocol/control.md``): one JSON request per line, one reply per request,
in order. The daemon writes its handshake line when it opens the line, which
the host may or may not see, so :class:`SerialControl` accepts it whenever it
comes and never waits for it. Every sub-command is one or a few requests:

* ``status``, ``name``, ``tracker``: read status, set ``device_name`` / ``tracker``;
* ``code``: share a folder on the device (if not yet shared) and print an
  access code for it, also as a QR code in the terminal (``segno``), so a
  device with no screen can be paired by a phone or laptop;
* ``attach``: join the owner's share with the owner's code;
* ``selftest``: the factory check -- the *link* (the host reaches the device's
  sync port and completes a ``clearskies:2`` handshake), the *storage* (a
  scratch share can be created on the device's flash, which writes its
  database) and the *clock* (the device's wall clock, as stamped on the
  scratch share's first record, agrees with the host's). The scratch share is
  removed again.

Exit status: 0 done, 1 a self-test check failed or the device answered an
error, 2 usage or line errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import serial

from csembed.access_code import AccessCode
from csembed.database.record import GetUpdates
from csembed.errors import CsembedError
from csembed.protocol.core import CoreConfig, Grant
from csembed.protocol.jsonvalues import parse_timestamp
from csembed.runtime.control_serial import parse_serial_spec
from csembed.security.keys import new_peer_id
from makerkit.probe_session import ProbeSession


class ProvisionError(Exception):
    """The line or the device failed; the message says how."""


class DeviceError(ProvisionError):
    """The device answered a request with an error reply."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(f"{reply.get('error')}: {reply.get('message')}")
        self.code = reply.get("error")


class SerialControl:
    """The control protocol over a serial line (host side)."""

    def __init__(self, spec: str, timeout: float = 15.0) -> None:
        device, baud = parse_serial_spec(spec)
        try:
            self.port = serial.Serial(device, baud, timeout=0.1)
        except serial.SerialException as exc:
            raise ProvisionError(f"cannot open {device}: {exc}") from None
        self.timeout = timeout
        self.handshake: dict[str, Any] | None = None
        self._buffer = bytearray()

    def close(self) -> None:
        """Close the line."""
        self.port.close()

    def __enter__(self) -> SerialControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            if time.monotonic() > deadline:
                raise ProvisionError(f"no answer from the device within {self.timeout:g} s "
                                     "(is the daemon running with --control-serial?)")
            self._buffer += self.port.read(max(1, self.port.in_waiting))
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        try:
            value = json.loads(line.rstrip(b"\r"))
        except ValueError:
            raise ProvisionError(f"the device sent a line that is not JSON: {line[:80]!r}") \
                from None
        if not isinstance(value, dict):
            raise ProvisionError(f"the device sent {value!r:.80} instead of an object")
        return value

    def call(self, kind: str, **args: Any) -> dict[str, Any]:
        """Send one request and return its reply; :class:`DeviceError` for an error reply."""
        self.port.write(json.dumps({"type": kind, **args}).encode() + b"\n")
        self.port.flush()
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._line(deadline)
            if reply.get("service") == "ClearSkies Control" and "protocol" in reply:
                self.handshake = reply
                continue
            if "error" in reply:
                raise DeviceError(reply)
            return reply


# -- self-test


def check_link_and_clock(host: str, port: int, code: str, timeout: float,
                         now: Callable[[], float] = time.time) -> tuple[str, int | None]:
    """Join the scratch share over the network; returns a description of the link
    and the device's newest record time (ns since the epoch), if any."""

    async def run() -> tuple[str, int | None]:
        config = CoreConfig(software="csembed-provision", extensions=("database", "directory"),
                            ping_interval=30.0)
        started = time.monotonic()
        session = await ProbeSession.open(host, port,
                                          Grant.code_holder(AccessCode.parse(code),
                                                            new_peer_id()), config)
        try:
            await session.wait_for(lambda: session.keys, timeout)
            if session.keys is None:
                raise ProvisionError(f"handshake with {host}:{port} failed: "
                                     f"{session.ended or 'timeout'}")
            await session.call("acknowledge_keys")
            if not await session.wait_for(lambda: session.ready, timeout):
                raise ProvisionError("the key exchange did not complete")
            link = f"{host}:{port}, handshake in {time.monotonic() - started:.2f} s"
            await session.send(GetUpdates({}).to_body())
            found = await session.wait_for(lambda: session.find("database.update"), timeout)
            if found is None:
                return link, None
            while await session.wait_for_more(0.5):
                pass
            stamps = [parse_timestamp(r.body.get("update_time"))
                      for r in session.inbox if r.type == "database.update"]
            return link, max(stamps)
        finally:
            await session.close()

    return asyncio.run(run())


def device_status(line: SerialControl) -> dict[str, Any]:
    """The device's detailed status (csembed's ``status_detail``), or the draft's
    small ``status`` from a daemon that does not have it."""
    try:
        return dict(line.call("status_detail"))
    except DeviceError as exc:
        if exc.code not in ("not_understood", "not_supported"):
            raise
        return dict(line.call("status"))


def selftest(line: SerialControl, scratch: str, host: str | None, max_skew: float,
             timeout: float) -> list[tuple[str, bool, str]]:
    """The factory self-test; returns ``(check, ok, detail)`` rows."""
    rows: list[tuple[str, bool, str]] = []
    status = device_status(line)
    listen = str(status.get("listen") or "")
    rows.append(("daemon", True, f"{status.get('software', '?')}, board "
                 f"{(status.get('board') or {}).get('name', '?')}, listen {listen or '?'}"))
    try:
        line.call("create_share", path=scratch)
    except DeviceError as exc:
        rows.append(("storage", False, f"cannot create a share in {scratch}: {exc}"))
        return rows
    try:
        shares = {s["path"]: s for s in line.call("list_shares")["shares"]}
        state = shares.get(scratch, {}).get("status", "missing")
        rows.append(("storage", state not in ("error", "missing"),
                     f"scratch share in {scratch}: {state}"))
        code = line.call("create_access_code", path=scratch, mode="read_write",
                         max_uses=1, expires=600)["access_code"]
        lhost, _, lport = listen.rpartition(":")
        target = host or lhost.strip("[]")
        if not lport.isdigit() or target in ("", "0.0.0.0", "::"):
            rows.append(("link", False, "the device listens on no concrete address; "
                         "give --host"))
            return rows
        try:
            link, stamp = check_link_and_clock(target, int(lport), code, timeout)
        except (ProvisionError, OSError, CsembedError) as exc:
            rows.append(("link", False, str(exc)))
            return rows
        rows.append(("link", True, link))
        if stamp is None:
            rows.append(("clock", False, "the device sent no record to read its clock from"))
        else:
            skew = stamp / 1e9 - time.time()
            rows.append(("clock", abs(skew) <= max_skew,
                         f"device clock {skew:+.1f} s from the host's (allowed ±{max_skew:g} s)"))
    finally:
        try:
            line.call("remove_share", path=scratch)
        except DeviceError as exc:
            rows.append(("cleanup", False, f"could not remove the scratch share: {exc}"))
    return rows


# -- command line


def build_parser() -> argparse.ArgumentParser:
    """The tool's command line."""
    p = argparse.ArgumentParser(
        prog="provision",
        description="Pair, configure and self-test a csembed device over its serial console "
                    "(the daemon runs with --control-serial DEVICE[,BAUD]).")
    p.add_argument("line", metavar="SERIAL[,BAUD]",
                   help="the host's end of the device's serial line, e.g. /dev/ttyACM0,115200")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds per answer (15)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("status", help="the device's status")
    name = sub.add_parser("name", help="set the device's name")
    name.add_argument("name")
    tracker = sub.add_parser("tracker", help="set the tracker (HOST:PORT, or 'none')")
    tracker.add_argument("address")
    code = sub.add_parser("code", help="share a folder on the device and show an access code")
    code.add_argument("path", help="folder on the device")
    code.add_argument("--mode", choices=["read-write", "read-only"], default="read-write")
    code.add_argument("--expires", type=float, default=86400.0, help="seconds (86400)")
    code.add_argument("--no-qr", action="store_true", help="do not draw the QR code")
    attach = sub.add_parser("attach", help="attach the device to the owner's share")
    attach.add_argument("code", help="the owner's access code")
    attach.add_argument("path", help="folder on the device to sync into")
    test = sub.add_parser("selftest", help="factory self-test: link, storage, clock")
    test.add_argument("--scratch", required=True,
                      help="an empty folder on the device's flash for a scratch share")
    test.add_argument("--host", help="the device's address as the host reaches it "
                      "(default: the address it listens on)")
    test.add_argument("--max-skew", type=float, default=300.0,
                      help="largest clock difference accepted, seconds (300)")
    return p


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    print(json.dumps(value, indent=2) if args.json else text)


def run(args: argparse.Namespace, line: SerialControl) -> int:
    """Carry out one sub-command over an open line."""
    if args.command == "status":
        status = device_status(line)
        board = status.get("board") or {}
        _print(args, status, f"{status.get('software', 'device')}: board "
               f"{board.get('name', '?')}, listening on {status.get('listen', '?')}, "
               f"{len(status.get('shares', []))} share(s), "
               f"{'paused' if status.get('paused') else 'running'}")
    elif args.command == "name":
        line.call("set_config_value", key="device_name", value=args.name)
        _print(args, {"device_name": args.name}, f"device name set to {args.name!r}")
    elif args.command == "tracker":
        value = None if args.address.lower() == "none" else args.address
        line.call("set_config_value", key="tracker", value=value)
        _print(args, {"tracker": value}, f"tracker set to {value or 'none'}")
    elif args.command == "code":
        try:
            line.call("create_share", path=args.path)
        except DeviceError as exc:
            if exc.code != "share_exists":
                raise
        reply = line.call("create_access_code", path=args.path,
                          mode=args.mode.replace("-", "_"), expires=args.expires)
        code = reply["access_code"]
        url = f"clearskies://directory/{code}"
        _print(args, {"access_code": code, "url": url, "path": args.path}, code)
        if not args.json and not args.no_qr:
            import segno
            segno.make(url, error="l").terminal(compact=True)
    elif args.command == "attach":
        line.call("add_share", code=args.code, path=args.path)
        _print(args, {"attached": args.path}, f"attaching {args.path}; the keys arrive when "
               "the owner's device is reachable")
    else:
        rows = selftest(line, args.scratch, args.host, args.max_skew, args.timeout)
        ok = all(r[1] for r in rows)
        _print(args, {"ok": ok, "checks": [{"check": n, "ok": g, "detail": d}
                                           for n, g, d in rows]},
               "\n".join(f"{n:<8} {'PASS' if g else 'FAIL'}  {d}" for n, g, d in rows)
               + f"\nself-test {'passed' if ok else 'FAILED'}")
        return 0 if ok else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tools/provision``."""
    args = build_parser().parse_args(argv)
    try:
        with SerialControl(args.line, args.timeout) as line:
            return run(args, line)
    except DeviceError as exc:
        print(f"provision: the device refused: {exc}", file=sys.stderr)
        return 1
    except (ProvisionError, CsembedError) as exc:
        print(f"provision: {exc}", file=sys.stderr)
        return 2
