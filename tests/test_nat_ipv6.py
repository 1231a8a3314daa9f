"""IPv6: daemons listen on ::1 (and dual-stack ::), register IPv6 addresses with
a tracker on ::1, dial them, and sync; the IPv6 address table is parsed right."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Proc,
    Procs,
    procs_fixture,
    short_tmp_fixture,
    tree,
    wait_for,
)

from csembed.runtime.reach import global_ipv6_addresses


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) here")


class V6Tracker(Proc):
    def __init__(self, root: Path) -> None:
        super().__init__(["tracker", "--listen", "[::1]:0"], root / "tracker.log")
        self.address = "[::1]:" + self.first_line().rsplit(":", 1)[1]


@needs_ipv6
@pytest.mark.once
def test_daemons_register_and_dial_ipv6_through_a_tracker(procs: Procs) -> None:
    tracker = V6Tracker(procs.root)
    procs.started.append(tracker)
    a = procs.daemon("a", "--tracker", tracker.address, listen="[::1]:0")
    b = procs.daemon("b", "--tracker", tracker.address, listen="[::1]:0")
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    (pa / "take.mid").write_bytes(b"MThd" + os.urandom(50_000))
    code = json.loads(a.cli("share", pa, "--json").stdout)["access_code"]
    b.cli("attach", code, pb, "--timeout", "60")
    wait_for(lambda: tree(pa) == tree(pb), "B to sync A's files over IPv6")
    links = [p for p in b.call("list_peers")["peers"] if p.get("state") == "connected"]
    assert links and all(p["address"].startswith("::1:") for p in links), links


@needs_ipv6
@pytest.mark.once
def test_dual_stack_listener_takes_ipv4_and_ipv6(procs: Procs) -> None:
    a = procs.daemon("a", listen="[::]:0")
    b = procs.daemon("b", "--peer", f"127.0.0.1:{a.port}")
    c = procs.daemon("c", "--peer", f"[::1]:{a.port}")
    pa = procs.root / "A"
    pa.mkdir()
    (pa / "take.mid").write_bytes(b"MThd" + os.urandom(20_000))
    code = json.loads(a.cli("share", pa, "--json", "--multi-use").stdout)["access_code"]
    for d, name in ((b, "B"), (c, "C")):
        d.cli("attach", code, procs.root / name, "--timeout", "60")
    wait_for(lambda: tree(pa) == tree(procs.root / "B") == tree(procs.root / "C"),
             "B (over IPv4) and C (over IPv6) to sync from one dual-stack listener")


def test_global_ipv6_addresses_are_read_from_the_kernel_table(tmp_path: Path) -> None:
    table = tmp_path / "if_inet6"
    table.write_text(
        "20010db8000000000000000000000001 02 40 00 80     eth0\n"   # global
        "fe800000000000000000000000000001 02 40 20 80     eth0\n"   # link-local
        "00000000000000000000000000000001 01 80 10 80       lo\n"   # loopback
        "20010db8000000000000000000000002 02 40 00 20     eth0\n"   # deprecated
        "20010db8000000000000000000000003 02 40 00 01     eth0\n")  # temporary
    assert global_ipv6_addresses(table) == ["2001:db8::1"]
    assert global_ipv6_addresses(tmp_path / "missing") == []
