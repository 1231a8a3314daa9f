"""Helpers for the NAT tests: a real STUN server (coturn's ``turnserver``, STUN
only) with a generated minimal config, started and stopped by the test."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

TURNSERVER = shutil.which("turnserver")


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def stun_config(directory: Path, ips: list[str], port: int) -> Path:
    """A coturn config serving plain STUN on ``ips:port`` and nothing else."""
    lines = [f"listening-ip={ip}" for ip in ips] + [
        f"listening-port={port}", "stun-only", "no-tcp", "no-tls", "no-dtls", "no-cli",
        "no-auth", "no-software-attribute", "simple-log",
        f"log-file={directory / 'turnserver.log'}", f"pidfile={directory / 'turnserver.pid'}",
        f"userdb={directory / 'turndb'}"]
    path = directory / "turnserver.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def stun_server(directory: Path, ips: list[str], port: int,
                netns: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``turnserver`` (in ``netns`` if given) until the block ends."""
    assert TURNSERVER is not None
    config = stun_config(directory, ips, port)
    command = [TURNSERVER, "-c", str(config)]
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # poll until it answers, not a fixed sleep
            if process.poll() is not None:
                raise RuntimeError("turnserver exited at start: "
                                   + (directory / "turnserver.log").read_text()[-2000:])
            log = directory / "turnserver.log"
            if log.exists() and "Total General servers" in log.read_text():
                break
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
