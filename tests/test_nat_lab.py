"""Reach across NATs in a real network lab (network namespaces, as root).

An "internet" segment holds a ``csembed tracker`` and a real STUN server
(coturn); two homes sit behind router namespaces doing NAT with nftables
(``masquerade persistent``: a port-preserving, port-restricted cone NAT;
``masquerade random``: symmetric), dropping unsolicited inbound traffic. A
piano daemon runs in home A, a laptop daemon in home B; each is driven
through the CLI. Needs root, iproute2, nftables and coturn (miniupnpd for the
UPnP test); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Daemon,
    Proc,
    Procs,
    procs_fixture,
    short_tmp_fixture,
    tree,
    wait_for,
)
from test_nat_support import MINIUPNPD, NatLab, lab_skip_reason

pytestmark = pytest.mark.once

TRACKER_PORT = 7000
PORT = 40121


class LabTracker(Proc):
    def __init__(self, lab: NatLab, root: Path) -> None:
        super().__init__(["tracker", "--listen", f"{lab.tracker_ip}:{TRACKER_PORT}"],
                         root / "tracker.log", lab.prefix("inet"))
        self.first_line()


@pytest.fixture
def lab_factory(procs: Procs) -> Iterator[object]:
    reason = lab_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    labs: list[NatLab] = []

    def make(**kwargs: object) -> NatLab:
        lab = NatLab(procs.root, **kwargs)  # type: ignore[arg-type]
        labs.append(lab)
        try:
            lab.build()
        except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            pytest.skip(f"cannot build the NAT lab here: {str(detail).strip()[:300]}")
        tracker = LabTracker(lab, procs.root)
        procs.started.append(tracker)
        return lab
    try:
        yield make
    finally:
        procs.stop_all()
        for lab in labs:
            lab.close()


def _daemon(procs: Procs, lab: NatLab, side: str, *extra: str) -> Daemon:
    stun = [arg for ip in lab.stun_ips for arg in ("--stun", f"{ip}:3478")]
    return procs.daemon(side, "--tracker", f"{lab.tracker_ip}:{TRACKER_PORT}", *stun, *extra,
                        listen=f"0.0.0.0:{PORT}", prefix=lab.prefix(f"h{side}"))


def _share_and_attach(procs: Procs, a: Daemon, b: Daemon) -> tuple[Path, Path]:
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    (pa / "take1.mid").write_bytes(b"MThd" + os.urandom(300_000))
    (pa / "notes.txt").write_text("left hand, bars 12-16\n")
    code = json.loads(a.cli("share", pa, "--json").stdout)["access_code"]
    b.cli("attach", code, pb, "--timeout", "60")
    return pa, pb


def test_cone_nats_sync_over_utp_through_punched_holes(lab_factory, procs: Procs) -> None:
    lab = lab_factory(nat_a="cone", nat_b="cone")
    a = _daemon(procs, lab, "a", "--port-mapping", "off")
    b = _daemon(procs, lab, "b", "--port-mapping", "off")
    for d, side in ((a, "a"), (b, "b")):
        nat = wait_for(lambda d=d: d.status()["nat"]["nat_type"] == "cone" and d.status()["nat"],
                       f"{d.name} to learn its NAT from STUN", timeout=30)
        assert nat["public_udp"] == f"{lab.router_ip[side]}:{PORT}", nat
        assert nat["hole_punching"] is True
    pa, pb = _share_and_attach(procs, a, b)
    wait_for(lambda: tree(pa) == tree(pb), "B to sync A's files through both NATs", timeout=90)
    peers = b.call("list_peers")["peers"]
    links = [p for p in peers if p.get("state") == "connected"]
    assert links and all(p["address"].startswith("utp:") for p in links), peers
    # and back: a change on B reaches A over the punched path
    (pb / "reply.txt").write_text("sounds good\n")
    b.rescan_until_scanned(pb)
    wait_for(lambda: (pa / "reply.txt").exists(), "A to get B's file", timeout=60)


def test_symmetric_nat_gives_a_clear_status_and_no_hang(lab_factory, procs: Procs) -> None:
    lab = lab_factory(nat_a="symmetric", nat_b="cone")
    a = _daemon(procs, lab, "a", "--port-mapping", "off")
    b = _daemon(procs, lab, "b", "--port-mapping", "off")
    nat = wait_for(lambda: a.status()["nat"]["nat_type"] == "symmetric" and a.status()["nat"],
                   "A to find out it is behind a symmetric NAT", timeout=30)
    assert nat["hole_punching"] is False
    assert "symmetric NAT" in nat["summary"] and "hole punching cannot work" in nat["summary"]
    assert nat["public_udp"] is None  # the servers disagree: no single public address
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    (pa / "take1.mid").write_bytes(b"MThd" + os.urandom(1000))
    code = json.loads(a.cli("share", pa, "--json").stdout)["access_code"]
    result = b.cli("attach", code, pb, "--timeout", "8", check=False)
    assert result.returncode != 0 and "still waiting" in result.stdout
    # both daemons keep answering promptly while their dials go nowhere
    assert b.status()["nat"]["nat_type"] == "cone"
    assert a.status()["connections"] == 0 and b.status()["connections"] == 0


@pytest.mark.skipif(MINIUPNPD is None, reason="miniupnpd is not installed")
def test_upnp_mapping_on_a_real_gateway_carries_tcp(lab_factory, procs: Procs) -> None:
    lab = lab_factory(nat_a="cone", nat_b="cone", upnp_a=True)
    a = _daemon(procs, lab, "a", "--port-mapping", "on")
    # B speaks TCP only, so the one way the two can meet is TCP through A's mapping
    # (with uTP on, A's punched uTP dial to B may win the race instead).
    b = _daemon(procs, lab, "b", "--port-mapping", "off", "--no-utp")
    mapping = wait_for(lambda: a.status()["nat"]["port_mapping"].startswith("upnp:") and
                       a.status()["nat"]["port_mapping"], "A's UPnP mapping", timeout=30)
    assert f"{lab.router_ip['a']}:{PORT}" in mapping and "TCP+UDP" in mapping, mapping
    assert f"dport {PORT}" in lab.nft_ruleset("ra")
    pa, pb = _share_and_attach(procs, a, b)
    wait_for(lambda: tree(pa) == tree(pb), "B to sync A's files through A's mapping",
             timeout=90)
    links = [p for p in b.call("list_peers")["peers"] if p.get("state") == "connected"]
    assert [p["address"] for p in links] == [f"{lab.router_ip['a']}:{PORT}"], links
    # the mapping is removed when the daemon stops
    assert a.stop() == 0
    wait_for(lambda: f"dport {PORT}" not in lab.nft_ruleset("ra"),
             "the gateway to drop A's mapping", timeout=20)
