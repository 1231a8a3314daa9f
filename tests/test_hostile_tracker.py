"""Issue 10 item 5: a tracker registers an ID only for a registrant who proves it.

The draft lets anyone register any club ID, so forged registrations could
list attacker-chosen addresses for a real share. A csembed tracker requires
a registration proof (a SHA-256 preimage of the ID; ``protocol/discovery.md``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)
from test_hostile_peer_lists import Sinks
from test_tracker_protocol import CLUB_X, PROOFS, Harness, addr, peer

from csembed.discovery.registration_proof import proof_hex, proves
from csembed.discovery.tracker_messages import (
    TrackerConnection,
    TrackerRegister,
    TrackerStart,
    encode,
)
from csembed.discovery.tracker_registry import TrackerServerConfig
from csembed.discovery.tracker_session import TrackerSession
from csembed.security.keys import LevelKeys, key_id_preimage


def _forger(h: Harness, name: str, proof: bytes | None) -> TrackerSession:
    """A client registering CLUB_X with ``proof`` (None: none at all)."""
    conn = h.registry.open("198.51.100.66", h.now)
    session = TrackerSession(ids={CLUB_X: peer(66)}, addresses=(addr(66),), software=name,
                             proofs={} if proof is None else {CLUB_X: proof})
    h.sessions[name] = (conn, session)
    h.names[conn] = name
    h.pump()
    return session


def test_registrations_without_a_valid_proof_are_not_listed() -> None:
    h = Harness()
    h.connect("member", {CLUB_X: peer(1)}, (addr(1),))
    _forger(h, "no proof", None)
    _forger(h, "wrong proof", b"guessed")
    assert h.registry.refused_ids == 2
    h.connect("other member", {CLUB_X: peer(2)}, (addr(2),))
    assert h.view("member", CLUB_X) == {peer(2): [addr(2)]}
    assert h.view("no proof", CLUB_X) is None  # an unproven ID is not answered either


def test_open_registration_is_the_drafts_behaviour() -> None:
    h = Harness(TrackerServerConfig(require_proof=False))
    h.connect("member", {CLUB_X: peer(1)}, (addr(1),))
    _forger(h, "no proof", None)
    assert h.view("member", CLUB_X) == {peer(66): [addr(66)]}


def test_proofs_and_derived_key_ids() -> None:
    assert proves(CLUB_X, PROOFS[CLUB_X].hex())
    assert not proves(CLUB_X, "00" * 8) and not proves(CLUB_X, "not hex") \
        and not proves(CLUB_X, None)
    level = LevelKeys.generate("read_only", random.Random(3).randbytes)
    assert level.key is not None and level.key_id is not None
    assert level.id_preimage == key_id_preimage(level.key)
    assert hashlib.sha256(level.id_preimage).digest() == level.key_id
    # a share made before key IDs were derived has a random one: no proof
    old = LevelKeys(level.access_level, level.verify_key, level.key, os.urandom(32),
                    level.signing_key)
    assert old.id_preimage is None
    with pytest.raises(ValueError):
        proof_hex(b"")


async def _forge(port: int, club: str, sinks: Sinks, count: int) -> None:
    """Register ``count`` fake peers for ``club`` (no proof: the ID is all we know)."""
    writers = []
    for n in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        sink = f"tcp:127.0.0.{2 + n % 50}:{sinks.port}"
        writer.write(encode(TrackerStart(ttl=600)) + encode(TrackerConnection((sink,)))
                     + encode(TrackerRegister({club: os.urandom(16).hex()})))
        writers.append(writer)
    await asyncio.gather(*(w.drain() for w in writers))
    await asyncio.sleep(0.5)  # let the tracker read them before we hang up
    for writer in writers:
        writer.close()


@pytest.mark.once
def test_forged_registrations_on_a_csembed_tracker_are_never_dialled(procs: Procs) -> None:
    tracker = procs.tracker()
    sinks = Sinks()
    try:
        a = procs.daemon("a", "--tracker", tracker.address, board="wifi-piano")
        pa, pb = procs.root / "A", procs.root / "B"
        pa.mkdir()
        (pa / "recital.mid").write_bytes(os.urandom(50_000))
        code = json.loads(a.cli("share", pa, "--json").stdout)["access_code"]
        share_id = a.call("list_shares")["shares"][0]["share_id"]
        host, port = tracker.address.rsplit(":", 1)
        asyncio.run(_forge(int(port), share_id, sinks, 200))
        # an honest member still registers and is found through the tracker
        b = procs.daemon("b", "--tracker", tracker.address)
        started = time.monotonic()
        b.cli("attach", code, pb, "--json", "--timeout", "60")
        wait_for(lambda: (pb / "recital.mid").is_file(), "B to receive A's file")
        print(f"B served through the tracker in {time.monotonic() - started:.1f} s")
        with sinks.lock:
            dialled = sum(len(t) for t in sinks.times.values())
    finally:
        sinks.close()
    assert dialled == 0
