"""LAN broadcast discovery between two daemons on two hosts (network namespaces).

Two network namespaces joined by a veth pair stand in for two machines on one
LAN; one daemon runs in each (``ip netns exec``), with no tracker and no
manual peer, announcing on the real UDP port 60106 to the subnet's broadcast
address. The CLI (in the root namespace: control sockets are files, shared by
all namespaces) shares a folder on A and attaches B with the code; B can only
find A through A's broadcast. Needs root; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    procs_fixture,
    short_tmp_fixture,
    tree,
    wait_for,
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str, str]]:
    """Namespaces A and B on one /24; yields (ns_a, ns_b, subnet prefix)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 'ip' is not installed")
    tag = uuid.uuid4().hex[:8]
    ns_a, ns_b = f"cda{tag}", f"cdb{tag}"
    subnet = f"10.{150 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
    try:
        try:
            for ns in (ns_a, ns_b):
                _ip("netns", "add", ns)
            _ip("link", "add", f"cva{tag}", "netns", ns_a, "type", "veth", "peer", "name",
                f"cvb{tag}", "netns", ns_b)
            for ns, dev, host in ((ns_a, f"cva{tag}", 1), (ns_b, f"cvb{tag}", 2)):
                _ip("-n", ns, "addr", "add", f"{subnet}.{host}/24", "brd", "+", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except (subprocess.CalledProcessError, OSError) as exc:
            reason = getattr(exc, "stderr", b"") or str(exc).encode()
            pytest.skip(f"cannot set up network namespaces here: {reason.decode().strip()}")
        yield ns_a, ns_b, subnet
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def test_two_daemons_find_each_other_by_lan_broadcast_and_sync(
        two_hosts: tuple[str, str, str], procs: Procs) -> None:
    ns_a, ns_b, subnet = two_hosts
    lan = ["--lan-address", f"{subnet}.255"]
    a = procs.daemon("a", *lan, listen=f"{subnet}.1:0", prefix=["ip", "netns", "exec", ns_a])
    b = procs.daemon("b", *lan, listen=f"{subnet}.2:0", prefix=["ip", "netns", "exec", ns_b])
    assert a.status()["lan_broadcast"] and b.status()["lan_broadcast"]
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    (pa / "take.mid").write_bytes(b"MThd" + os.urandom(20000))
    (pa / "sub").mkdir()
    (pa / "sub" / "other.mid").write_bytes(b"MThd" + os.urandom(3000))
    code = a.cli("share", pa, "--json").stdout
    b.cli("attach", json.loads(code)["access_code"], pb, "--timeout", "60")
    wait_for(lambda: tree(pa) == tree(pb), "B to sync A's files found over the LAN")
    peers = b.call("list_peers")["peers"]
    assert any(p.get("address", "").startswith(f"{subnet}.1:") for p in peers), peers
    # a change on B reaches A over the same connection
    (pb / "from b.txt").write_text("hello from the other host\n")
    b.rescan_until_scanned(pb)
    wait_for(lambda: (pa / "from b.txt").exists(), "B's new file to reach A")
