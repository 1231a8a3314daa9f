"""The pieces the daemon is wired from, each on its own: issued codes (real files,
injected clocks), attach answers, problem lists, the error table, and the layer
rule that the peer finder knows nothing of the daemon."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from csembed.access_code import AccessCode
from csembed.runtime import errors, peer_finder
from csembed.runtime.attach_watch import AttachWatch, check_folder
from csembed.runtime.connection_manager import Target
from csembed.runtime.control_handler import ERROR_CODES
from csembed.runtime.data_dir import DataDir
from csembed.runtime.issued_codes import IssuedCodes
from csembed.runtime.status_views import Contact, problems_of
from csembed.security.keys import READ_ONLY, READ_WRITE, ShareKeys, new_peer_id


class Clocks:
    def __init__(self) -> None:
        self.loop = 1000.0
        self.wall = 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.loop += seconds
        self.wall += seconds


def _codes(root: Path, clocks: Clocks) -> IssuedCodes:
    data = DataDir(root)
    data.create()
    return IssuedCodes(data, clock=lambda: clocks.loop, wall=lambda: clocks.wall)


def test_issued_codes_list_expire_revoke_and_survive_a_reload(tmp_path: Path) -> None:
    clocks = Clocks()
    keys = ShareKeys.generate()
    share_id = keys.level(READ_ONLY).key_id_hex
    assert share_id is not None
    peer = new_peer_id()
    codes = _codes(tmp_path, clocks)
    short = codes.issue(share_id, keys, READ_WRITE, peer, max_uses=1, lifetime=60)
    multi = codes.issue(share_id, keys, READ_ONLY, peer, max_uses=None, lifetime=None)
    listed = {c["code"]: c for c in codes.listing()}
    assert listed[short.text]["mode"] == READ_WRITE and listed[short.text]["max_uses"] == 1
    assert listed[short.text]["expires_at"] == pytest.approx(clocks.wall + 60)
    assert listed[multi.text]["expires_at"] is None and listed[multi.text]["max_uses"] is None
    assert codes.is_ours(short.access_id)

    # A reload (a restart) keeps both, on the wall clock.
    clocks.advance(30)
    again = _codes(tmp_path, clocks)
    again.load(lambda sid: (keys, peer) if sid == share_id else None)
    assert {c["code"] for c in again.listing()} == {short.text, multi.text}

    clocks.advance(31)
    assert again.expire()
    states = {c["code"]: c["state"] for c in again.listing()}
    assert states == {short.text: "expired", multi.text: "live"}
    assert again.table.lookup(short.access_id, clocks.loop) is None

    with pytest.raises(errors.NoSuchCode, match="no live access code"):
        again.revoke("SYNCZZZZ")
    revoked = again.revoke(multi.text[:12].lower())
    assert revoked["code"] == multi.text
    assert again.table.lookup(multi.access_id, clocks.loop) is None
    assert [c["state"] for c in again.listing()] == ["revoked", "expired"]
    reloaded = _codes(tmp_path, clocks)
    reloaded.load(lambda sid: (keys, peer))
    assert reloaded.listing() == []


def _target(club: str, port: int) -> Target:
    return Target("attach", club, None, (("127.0.0.1", port),), None, "manual")


def test_attach_answers_fold_every_dial() -> None:
    watch = AttachWatch()
    club = AccessCode.generate().access_id
    one, two = _target(club, 1), _target(club, 2)
    assert watch.outcome(club, [])["attach_state"] == "looking"
    assert watch.outcome(club, [one, two])["attach_state"] == "dialling"
    refused = SimpleNamespace(ready=None, address="127.0.0.1:2",
                              ended="handshake failed: authentication failed: …")
    assert watch.dial_ended(two, refused) is not None  # type: ignore[arg-type]
    assert watch.dial_ended(two, refused) is None  # type: ignore[arg-type]  (not news)
    assert watch.outcome(club, [one, two])["attach_state"] == "dialling"
    watch.dial_ended(one, None)
    state = watch.outcome(club, [one, two])
    assert state["attach_state"] == "unreachable"
    assert "no answer at 127.0.0.1:1" in state["reason"] and "still trying" in state["reason"]
    watch.dial_ended(one, refused)  # type: ignore[arg-type]
    state = watch.outcome(club, [one, two])
    assert state["attach_state"] == "refused" and "expired" in state["reason"]
    watch.failed("/x", "already a member")
    assert watch.results["/x"]["status"] == "attach_failed"
    assert watch.clear("/x") and not watch.clear("/x")


def test_attaching_into_a_folder_with_files_needs_merge(tmp_path: Path) -> None:
    check_folder(str(tmp_path), merge=False)  # empty: fine
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(errors.FolderNotEmpty, match="already holds 1 file"):
        check_folder(str(tmp_path), merge=False)
    check_folder(str(tmp_path), merge=True)


def test_problems_come_from_todays_and_tomorrows_engine_keys() -> None:
    state: dict[str, Any] = {
        "notices": [{"key": "/a", "reason": "symbolic link not followed"},
                    {"key": "/b", "reason": "changed locally on a read-only share; restored"},
                    {"key": "/c", "reason": "conflict: the other version won; ours was kept "
                                            "as /c.CONFLICT.x"}],
        "limits": [{"key": "/d", "limit": "quota", "message": "quota: over"}],
        "rejected": [], "failures": [{"key": "/e", "reason": "peer went away"}],
        # the engine's newer keys; conflicts are the keys of the copies held
        "conflicts": ["/f.CONFLICT.y"],
        "held_back": [{"key": "/g", "limit": "disk_full", "message": "disk full"}],
        "unavailable": [{"key": "/h"}],
    }
    kinds = {p["key"]: p["kind"] for p in problems_of(state)}
    assert kinds == {"/a": "symlink_skipped", "/b": "read_only_reverted", "/c": "conflict",
                     "/d": "quota", "/e": "failed", "/f.CONFLICT.y": "conflict", "/g": "disk_full",
                     "/h": "unavailable"}
    assert problems_of({}) == []


def test_a_share_has_reached_a_peer_only_since_its_last_change() -> None:
    contact = Contact()
    assert contact.observe(0, 0, holds_files=False)  # nothing to send
    assert not contact.observe(3, 0, holds_files=True)
    assert contact.observe(3, 1, holds_files=True)
    assert contact.observe(3, 0, holds_files=True)  # reached since the change
    assert not contact.observe(4, 0, holds_files=True)  # changed again, nobody since


def test_every_runtime_error_has_a_control_code() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, errors.DaemonError) and c is not errors.DaemonError]
    assert classes and all(c in ERROR_CODES for c in classes)


def test_the_peer_finder_does_not_know_the_daemon() -> None:
    tree = ast.parse(Path(peer_finder.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert not any(name and ("daemon" in name or "control" in name) for name in imported)


def test_removed_peers_persist_and_refuse_bad_files(tmp_path: Path) -> None:
    from csembed.runtime.data_dir import DataDirError
    from csembed.runtime.removed_peers import RemovedPeers

    data = DataDir(tmp_path)
    data.create()
    share_id = ShareKeys.generate().level(READ_ONLY).key_id_hex
    assert share_id is not None
    peer = new_peer_id()
    removed = RemovedPeers(data)
    removed.remove(share_id, peer)
    again = RemovedPeers(data)
    again.load()
    assert again.is_removed(share_id, peer) and not again.is_removed(share_id, None)
    with pytest.raises(errors.NoSuchPeer):
        again.allow(share_id, "zz")
    assert again.allow(share_id, peer[:6]) == peer
    assert not again.is_removed(share_id, peer)
    data.save_removed({share_id: {peer}})
    data.removed_path.write_text('{"format": "csembed-removed-peers", "version": 1, '
                                 '"removed": {"' + share_id + '": ["NOT-A-PEER"]}}')
    data.removed_path.chmod(0o600)
    with pytest.raises(DataDirError, match="hex digits"):
        RemovedPeers(data).load()
