"""What ``status``, ``list_shares``, ``list_peers`` and ``list_transfers`` report.

Theory of operation
-------------------
Plain functions from the daemon's parts to JSON objects; none changes state.

A share's status word follows one rule, so that ``synced`` can be trusted:
a share is ``synced`` only when its engine is idle, nothing it should hold
is missing (no file to sync, none held back by a limit, none wanted that no
peer has) and it has reached a peer since its last local change. Otherwise
the word says what it is doing (``scanning``, ``syncing``, ``paused``,
``error``) or ``waiting``, and ``missing`` says, in a few short phrases,
what is missing and why ("0 peers reachable", "3 files held back: quota").

``problems`` lists, with file names, what the user should know about:
conflicts, edits reverted on a read-only share, skipped symbolic links and
special files, files over the size limit or the quota, files refused for
lack of space, records refused and failed transfers. It is built from the
engine's ``status()`` keys that exist today (``limits``, ``notices``,
``rejected``, ``failures``) and, when present, the newer ones (``conflicts``,
``held_back``, ``unavailable``, ``complete``), read with ``.get`` so either
engine works.

Transfers go both ways: ``transfers`` are the files being fetched, and
``uploads`` (``direction: up``) the files being sent, one per file and peer,
with how far into the file the bytes sent reach (``done`` of ``total``) and
the peer's device name (``peer_name``) when it sent one. ``status`` itself
carries none of this (it stays small); ``status_detail`` has them per share
and ``list_transfers`` all of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from csembed.board_profile import BoardProfile
from csembed.runtime.connection_manager import ConnectionManager
from csembed.runtime.data_dir import PendingAttach, ShareEntry
from csembed.runtime.share_set import OpenShare

__all__ = [
    "Contact", "attach_view", "board_view", "hostport", "peer_names", "peer_views",
    "problems_of", "share_view", "transfer_views", "unloadable_view", "upload_views",
]

MAX_PROBLEMS = 50  #: problems listed per share (the count is always exact)

_LIMIT_WORDS = {"quota": "quota", "max_file_size": "over the size limit",
                "free_space_reserve": "not enough free space",
                "disk_full": "disk full"}


@dataclass
class Contact:
    """Whether a share has reached a peer since its last local change."""

    changes_seen: int = 0
    reached: bool = False

    def observe(self, local_changes: int, links: int, holds_files: bool) -> bool:
        """True if a peer was connected since the last local change (an empty share
        has nothing to send); a restart forgets, until a peer connects again."""
        if local_changes != self.changes_seen:
            self.changes_seen = local_changes
            self.reached = False
        if links > 0:
            self.reached = True
        return self.reached or not holds_files


def _notice_kind(reason: str) -> str:
    text = reason.lower()
    if "read-only share" in text:
        return "read_only_reverted"
    if "conflict" in text or "changed locally while a new version" in text \
            or "changed here before the version from a peer" in text:
        return "conflict"
    if "symbolic link" in text:
        return "symlink_skipped"
    if "special file" in text:
        return "special_file_skipped"
    return "notice"


def _item_key(item: Mapping[str, Any]) -> str:
    return str(item.get("key") or item.get("path") or "")


def _item_text(item: Mapping[str, Any]) -> str:
    return str(item.get("message") or item.get("reason") or item.get("limit") or "")


def problems_of(state: Mapping[str, Any]) -> list[dict[str, str]]:
    """Everything wrong with one share, with file names (see the module docstring)."""
    out: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def add(kind: str, key: str, message: str) -> None:
        if (kind, key) not in seen:
            seen.add((kind, key))
            out.append({"kind": kind, "key": key, "message": message})

    for copy in state.get("conflicts") or []:  # keys of the CONFLICT copies held
        add("conflict", str(copy), "a conflicting version, kept beside the original")
    for item in state.get("notices") or []:
        add(_notice_kind(str(item.get("reason", ""))), _item_key(item), _item_text(item))
    for item in state.get("limits") or []:
        add(str(item.get("limit") or "limit"), _item_key(item), _item_text(item))
    for item in state.get("held_back") or []:
        add(str(item.get("limit") or item.get("reason") or "held_back"), _item_key(item),
            _item_text(item))
    for item in state.get("unavailable") or []:
        add("unavailable", _item_key(item),
            _item_text(item) or "wanted, but no reachable peer has this version")
    for item in state.get("rejected") or []:
        add("rejected", _item_key(item), _item_text(item))
    for item in state.get("failures") or []:
        add("failed", _item_key(item), _item_text(item))
    return out


def _missing(state: Mapping[str, Any], problems: list[dict[str, str]], links: int,
             reached: bool) -> list[str]:
    """Short phrases saying what the share lacks and why."""
    phrases = []
    held: dict[str, int] = {}
    for problem in problems:
        if problem["kind"] in _LIMIT_WORDS or problem["kind"] == "held_back":
            word = _LIMIT_WORDS.get(problem["kind"], "held back")
            held[word] = held.get(word, 0) + 1
    for word, count in held.items():
        phrases.append(f"{count} file{'s' if count != 1 else ''} held back: {word}")
    unavailable = sum(1 for p in problems if p["kind"] == "unavailable")
    if unavailable:
        phrases.append(f"{unavailable} file{'s' if unavailable != 1 else ''} no reachable "
                       "peer has")
    files = int(state.get("files_to_sync") or 0)
    if files:
        phrases.append(f"{files} file{'s' if files != 1 else ''} to fetch")
    if links == 0 and (files or not reached):
        phrases.append("0 peers reachable")
    elif not reached:
        phrases.append("local changes not yet sent to a peer")
    return phrases


def share_view(share: OpenShare, *, links: int, paused: bool, contact: Contact,
               names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One share for ``status_detail`` and ``list_shares``: word, counts, problems,
    missing, files being fetched (``transfers``) and sent (``uploads``)."""
    entry = share.entry
    info: dict[str, Any] = {"path": entry.path, "share_id": entry.share_id,
                            "access_level": entry.access_level, "peer_id": entry.peer_id,
                            "paused": share.policy.paused, "sync_mode": share.policy.mode.value}
    if share.runtime is None or share.error is not None:
        info.update(status="error", reason=share.error, problems=[], missing=[share.error])
        return info
    engine = share.runtime.engine
    state = engine.status()
    stats = engine.stats()
    problems = problems_of(state)
    holds = share.local is not None and share.local.cache.total_file_bytes() > 0
    reached = contact.observe(int(stats.get("local_changes", 0)), links, holds)
    missing = _missing(state, problems, links, reached)
    complete = state.get("complete")
    word = {"idle": "synced", "syncing": "syncing", "scanning": "scanning",
            "error": "error", "incomplete": "waiting"}.get(state["state"], state["state"])
    if word == "synced" and (missing or complete is False):
        word = "waiting"
    if paused and word != "error":
        word = "paused"
    names = names or {}
    transfers = [_named(t, names) for t in engine.transfers()]
    info.update(uploads=upload_views(engine, names))
    info.update(status=word, reason=state.get("reason"), peers=links,
                files_to_sync=state["files_to_sync"], bytes_to_sync=state["bytes_to_sync"],
                transfers=transfers, waiting_for_peers=state["waiting_for_peers"],
                limits=state["limits"], failures=state["failures"][:20],
                notices=state["notices"][:20], rejected=state["rejected"][:20],
                problems=problems[:MAX_PROBLEMS], problem_count=len(problems),
                missing=missing, reached_peer=reached,
                stats=stats, scans=stats.get("scans", 0),
                last_scan_seconds=state["last_scan_seconds"])
    for key in ("conflicts", "held_back", "unavailable", "complete", "progress",
                "out_of_sync", "out_of_sync_count", "not_sent", "not_sent_count",
                "ignore_error"):
        if key in state:
            info[key] = state[key]
    return info


def attach_view(attach: PendingAttach, outcome: Mapping[str, Any] | None) -> dict[str, Any]:
    """An attach still waiting for its keys, with the last thing its dials found."""
    info: dict[str, Any] = {"path": attach.path, "status": "attaching",
                            "access_id": attach.access_id, "peer_id": attach.peer_id,
                            "since": attach.created_at}
    if outcome:
        info.update(outcome)
    return info


def unloadable_view(entry: ShareEntry, reason: str) -> dict[str, Any]:
    """A share whose keys cannot be loaded."""
    return {"path": entry.path, "status": "error", "reason": reason,
            "share_id": entry.share_id, "access_level": entry.access_level,
            "problems": [], "missing": [reason]}


def board_view(board: BoardProfile, *, upload_limit: float, download_limit: float,
               scan_interval: float) -> dict[str, Any]:
    """The active board and the limits the daemon enforces."""
    return {"name": board.name, "description": board.description,
            "summary": board.summary(),
            "upload_limit": int(upload_limit), "download_limit": int(download_limit),
            "max_connections": board.memory.max_connections,
            "max_open_transfers": board.memory.max_open_transfers,
            "max_bytes_in_flight": board.memory.max_bytes_in_flight,
            "chunk_size": board.memory.chunk_size,
            "quota": board.storage.quota, "max_file_size": board.storage.max_file_size,
            "scan_interval": scan_interval}


def peer_names(manager: ConnectionManager | None) -> dict[str, str]:
    """Peer ID -> the device name it sent, for the peers connected now."""
    if manager is None:
        return {}
    return {r.ready.peer_id: r.ready.peer_name for r in manager.records()
            if r.ready is not None and r.ready.peer_name}


def _named(transfer: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    name = names.get(str(transfer.get("peer")))
    return {**transfer, "peer_name": name} if name else dict(transfer)


def upload_views(engine: Any, names: Mapping[str, str],
                 now: float | None = None) -> list[dict[str, Any]]:
    """What the engine is sending, file by file and peer by peer (``direction: up``)."""
    uploads = getattr(engine, "uploads", None)
    if not callable(uploads):
        return []
    return [{"direction": "up", **_named(u, names)}
            for u in uploads(time.time() if now is None else now)]


def transfer_views(shares: Iterable[OpenShare], names: Mapping[str, str] | None = None,
                   now: float | None = None) -> list[dict[str, Any]]:
    """Every file being fetched and sent, in every share (``names``: peer ID -> device
    name, see :func:`peer_names`; ``now``: wall-clock time, by default the present)."""
    names = names or {}
    out = []
    for share in shares:
        if share.runtime is None:
            continue
        engine = share.runtime.engine
        for transfer in engine.transfers():
            out.append({"share": share.entry.path, "direction": "down",
                        **_named(transfer, names)})
        for upload in upload_views(engine, names, now):
            out.append({"share": share.entry.path, **upload})
    return out


def hostport(address: tuple[str, int]) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_views(manager: ConnectionManager, paths: Mapping[str, str],
               attaching: Mapping[str, str]) -> list[dict[str, Any]]:
    """Connected peers (with the device name each sent) and the ones being dialled.

    ``paths``: share ID -> path; ``attaching``: access ID -> path of the attach.
    """
    out = []
    connected = set()
    for record in manager.records():
        item = record.describe()
        item["share"] = paths.get(record.share_id or "")
        out.append(item)
        if record.ready is not None and record.share_id is not None:
            connected.add((record.share_id, record.ready.peer_id))
    for target in manager.targets():
        peer = manager.peer_for(target)
        if target.kind == "share" and (target.club, peer) in connected:
            continue
        out.append({"peer_id": peer, "state": "dialling", "source": target.source,
                    "share": paths.get(target.club) if target.kind == "share" else None,
                    "attaching": attaching.get(target.club) if target.kind == "attach"
                    else None,
                    "addresses": [hostport(a) for a in target.addresses]})
    return out
