"""Access codes and devices from the CLI (issue 13.3, 10.13): ``csembed codes`` lists
issued codes with mode, uses and expiry; ``codes revoke`` stops one at once;
``csembed peers`` shows each device's name -- set before or after the link is up --
and ``peers remove`` stops this device syncing a share with a device (kept across a
restart; ``peers allow`` undoes it)."""

from __future__ import annotations

import json

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    code_of,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)


@pytest.mark.once
def test_codes_list_and_revoke_and_peer_names_travel(procs: Procs) -> None:
    a = procs.daemon("a")
    b = procs.daemon("b", "--peer", a.address)
    assert a.cli("config", "device_name", "piano").stdout.strip() == 'device_name = "piano"'
    pa = procs.root / "A"
    pa.mkdir()
    (pa / "take.mid").write_bytes(b"MThd" + bytes(64))
    assert "no access codes issued" in a.cli("codes").stdout

    once = code_of(a.cli("share", pa, "--json").stdout)
    ro = code_of(a.cli("share", pa, "--mode", "read-only", "--multi-use", "--expires", "2h",
                       "--json").stdout)
    listing = a.cli("codes").stdout
    assert f"{once}  read-write used 0 of 1, expires in 1 d  {pa}" in listing, listing
    assert f"{ro}  read-only  used 0 of unlimited, expires in 2 h  {pa}" in listing, listing

    revoked = a.cli("codes", "revoke", once[:12]).stdout
    assert f"revoked {once} (read-write)" in revoked
    assert f"{once}  read-write revoked" in a.cli("codes").stdout
    refused = b.cli("attach", once, procs.root / "B-revoked", check=False)
    assert refused.returncode == 1 and "refused the code" in refused.stdout, refused.stdout
    missing = a.cli("codes", "revoke", "SYNCNOSUCHCODE", check=False)
    assert missing.returncode == 2 and "no live access code matches" in missing.stderr

    pb = procs.root / "B"
    assert "joined" in b.cli("attach", ro, pb).stdout
    assert f"{ro}  read-only  used 1 of unlimited" in a.cli("codes").stdout

    # The name set on A before the link shows on B ...
    wait_for(lambda: '"piano"' in b.cli("peers").stdout, "B to see A's device name")
    # ... and a name set on B while linked reaches A (the link is renewed to carry it).
    b.cli("config", "device_name", "laptop")
    wait_for(lambda: '"laptop"' in a.cli("peers").stdout, "A to see B's new device name")
    peers = json.loads(a.cli("peers", "--json").stdout)["peers"]
    laptop = next(p for p in peers if p.get("name") == "laptop")
    assert laptop["share"] == str(pa)

    who = laptop["peer_id"][:8]
    removed = a.cli("peers", "remove", pa, who).stdout
    assert f"removed peer {laptop['peer_id'][:12]} from {pa}: closed 1 connection(s)" \
        in removed, removed
    # B keeps dialling A; A refuses it for this share, and says so.
    (pa / "after.mid").write_bytes(b"MThd after")
    a.rescan_until_scanned(pa)
    wait_for(lambda: "removed from share" in (procs.root / "a.log").read_text(),
             "A to refuse B's reconnection")
    listing = a.cli("peers").stdout
    assert f"{laptop['peer_id'][:12]}  removed    from {pa}" in listing, listing
    assert not (pb / "after.mid").exists()
    assert json.loads(a.cli("peers", "--json").stdout)["peers"] == \
        [{"peer_id": laptop["peer_id"], "state": "removed", "share": str(pa)}]
    # ... across a restart, until allowed again.
    a.restart()
    b.cli("config", "peers", json.dumps([a.address]))  # A listens on a new port now
    assert f"{laptop['peer_id'][:12]}  removed" in a.cli("peers").stdout
    assert f"peer {laptop['peer_id'][:12]} may sync {pa} again" in \
        a.cli("peers", "allow", pa, who).stdout
    wait_for(lambda: (pb / "after.mid").exists(), "B to sync again once allowed")
    nobody = a.cli("peers", "remove", pa, "ffffffff", check=False)
    assert nobody.returncode == 2 and "no known peer" in nobody.stderr
