"""Access codes and devices from the CLI (issue 13.3, 10.13): ``csembed codes`` lists
issued codes with mode, uses and expiry; ``codes revoke`` stops one at once;
``csembed peers`` shows each device's name -- set before or after the link is up --
and ``peers remove`` closes a device's connection to a share."""

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

    closed = a.cli("peers", "remove", pa, laptop["peer_id"][:8]).stdout
    assert f"closed 1 connection(s) of peer {laptop['peer_id'][:8]} for {pa}" in closed
    nobody = a.cli("peers", "remove", pa, "ffffffff", check=False)
    assert nobody.returncode == 2 and "no connected peer" in nobody.stderr
