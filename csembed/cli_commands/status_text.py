"""How the CLI writes the daemon's status for people: shares, problems, progress.

Theory of operation
-------------------
Pure functions from control replies to text (no I/O), so each can be tested
on a reply. :func:`render_status` is ``csembed status``: daemon line,
discovery, rates, board, then per share its word, what is missing and why,
and its problems with file names. :func:`transfer_line` is one transfer's
progress (bar, percentage, rate, ETA), a download (``↓ … ← peer``) or an
upload (``↑ … → peer``) alike; :class:`RateMeter` turns successive ``done``
counts into a rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from csembed.units import format_rate, format_size

__all__ = ["RateMeter", "render_held", "render_problems", "render_share", "render_status",
           "share_progress", "transfer_line"]

MAX_SHOWN = 8  #: problems listed per share on the terminal (the count is exact)

_PROBLEM_TITLES = {
    "conflict": "conflict",
    "read_only_reverted": "reverted (read-only share)",
    "symlink_skipped": "skipped: symbolic link",
    "special_file_skipped": "skipped: special file",
    "quota": "held back: quota",
    "max_file_size": "held back: over the size limit",
    "free_space_reserve": "held back: not enough free space",
    "disk_full": "held back: disk full",
    "held_back": "held back",
    "unavailable": "unavailable",
    "rejected": "refused from a peer",
    "failed": "failed",
    "notice": "note",
}


def bar(done: int, total: int, width: int = 24) -> str:
    """``[####----]  42.0%``."""
    fraction = 1.0 if total <= 0 else min(1.0, done / total)
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction * 100:5.1f}%"


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class RateMeter:
    """Bytes per second of each transfer, from the ``done`` counts seen over time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._first: dict[str, tuple[float, int]] = {}

    def rate(self, key: str, done: int) -> float | None:
        now = self._clock()
        first = self._first.setdefault(key, (now, done))
        elapsed = now - first[0]
        if elapsed < 0.5 or done < first[1]:
            return None
        return (done - first[1]) / elapsed


def _peer(transfer: dict[str, Any]) -> str:
    """The peer's device name, else the start of its ID."""
    return str(transfer.get("peer_name") or str(transfer.get("peer") or "?")[:8])


def transfer_line(transfer: dict[str, Any], rate: float | None) -> str:
    """One transfer: direction, bar, bytes, rate and ETA, file name, peer."""
    done, total = int(transfer.get("done", 0)), int(transfer.get("total", 0))
    up = transfer.get("direction") == "up"
    text = f"{'↑' if up else '↓'} {bar(done, total)} {format_size(done)} / {format_size(total)}"
    if rate is not None and rate > 0:
        text += f"  {format_size(int(rate))}/s"
        if total > done:
            text += f"  ETA {_eta((total - done) / rate)}"
    text += f"  {transfer.get('share', '')}{transfer.get('key', '')}"
    if up:
        return f"{text} → {_peer(transfer)}"
    if transfer.get("peer_name"):
        return f"{text} ← {transfer['peer_name']}"
    return text


def render_problems(share: dict[str, Any], limit: int = MAX_SHOWN) -> list[str]:
    """The share's problems, one line each, with file names."""
    lines = []
    problems = share.get("problems") or []
    for problem in problems[:limit]:
        title = _PROBLEM_TITLES.get(problem.get("kind", ""), problem.get("kind", ""))
        message = problem.get("message") or ""
        key = problem.get("key") or ""
        lines.append(f"    {title}: {key}" + (f" — {message}" if message else ""))
    count = int(share.get("problem_count", len(problems)))
    if count > limit:
        lines.append(f"    … and {count - limit} more (csembed status --json)")
    return lines


def share_progress(share: dict[str, Any]) -> str:
    """``3 file(s), 1.2 MiB to go, 40% of 2 MiB``; empty when nothing is to sync."""
    if not share.get("files_to_sync"):
        return ""
    return (f"{share['files_to_sync']} file(s), {format_size(share.get('bytes_to_sync', 0))}"
            f" to go{_percent(share)}")


def _percent(share: dict[str, Any]) -> str:
    total = share.get("bytes_to_sync") or 0
    transfers = share.get("transfers") or []
    if not transfers and not total:
        return ""
    whole = sum(int(t.get("total", 0)) for t in transfers)
    done = sum(int(t.get("done", 0)) for t in transfers)
    left = int(total)
    size = max(whole, done + left)
    if size <= 0:
        return ""
    return f", {100.0 * (size - left) / size:.0f}% of {format_size(size)}"


def render_share(share: dict[str, Any]) -> list[str]:
    """A share's headline, what is missing, and its problems."""
    status = share.get("status", "?")
    if status == "attaching":
        line = f"share {share['path']}: attaching — {share.get('reason') or 'waiting'}"
        return [line]
    if status == "attach_failed":
        return [f"share {share['path']}: attach failed — {share.get('reason')}"]
    line = f"share {share['path']}: {status}"
    if share.get("sync_mode", "send_receive") != "send_receive":
        line += f" ({share['sync_mode'].replace('_', '-')})"
    if share.get("peers") is not None:
        line += f", {share['peers']} peer(s) connected"
    if share.get("files_to_sync"):
        line += (f", {share['files_to_sync']} file(s) / "
                 f"{format_size(share.get('bytes_to_sync', 0))} to sync")
        line += _percent(share)
    missing = share.get("missing") or []
    if missing and status != "error":
        line += " — " + "; ".join(missing)
    if share.get("reason"):
        line += f" ({share['reason']})"
    lines = [line]
    for transfer in share.get("transfers") or []:
        lines.append(f"    {transfer_line({**transfer, 'share': ''}, None)}")
    for upload in share.get("uploads") or []:
        lines.append(f"    {transfer_line({**upload, 'share': '', 'direction': 'up'}, None)}")
    lines.extend(render_problems(share))
    lines.extend(render_held(share))
    return lines


def render_held(share: dict[str, Any], limit: int = MAX_SHOWN) -> list[str]:
    """What a share's mode keeps back, and an unusable ignore file."""
    lines = []
    if share.get("ignore_error"):
        lines.append(f"    ignore file: {share['ignore_error']}; nothing is scanned until "
                     "it is fixed")
    for key, what in (("out_of_sync", "changed by peers, not applied here (send-only)"),
                      ("not_sent", "changed here, not sent (receive-only)")):
        keys = share.get(key) or []
        count = share.get(f"{key}_count", len(keys))
        if count:
            lines.append(f"    {count} file(s) {what}: " + ", ".join(keys[:limit])
                         + (" …" if count > limit else ""))
    return lines


def render_status(reply: dict[str, Any]) -> str:
    """The ``status_detail`` reply as text for people."""
    lines = []
    board = reply.get("board", {})
    state = "paused" if reply.get("paused") else "running"
    tracker = reply.get("tracker")
    lines.append(f"daemon {state}, {reply.get('software', '')}, listening on "
                 f"{reply.get('listen', '?')}, {reply.get('connections', 0)} connection(s)")
    track = "no tracker" if not tracker else (
        f"tracker {tracker['address']} ({tracker['state']})")
    lines.append(f"discovery: {track}; LAN broadcast "
                 f"{'on' if reply.get('lan_broadcast') else 'off'}")
    lines.append(f"measured rates: up {format_size(reply.get('upload_rate', 0))}/s, "
                 f"down {format_size(reply.get('download_rate', 0))}/s")
    if board:
        limits = ", ".join(f"{k} {v}" for k, v in board.get("summary", {}).items())
        lines.append(f"board {board.get('name')}: {limits}")
        lines.append(f"  limits now: up {format_rate(board.get('upload_limit', 0))}, "
                     f"down {format_rate(board.get('download_limit', 0))}, "
                     f"{board.get('max_connections')} connections, "
                     f"{board.get('max_open_transfers')} transfers")
    shares = reply.get("shares", [])
    if not shares:
        lines.append("no shares; `csembed share PATH` starts one, `csembed attach CODE PATH` "
                     "joins one")
    for share in shares:
        lines.extend(render_share(share))
    return "\n".join(lines)
