"""``directory.present_many``: a scan's new contents announced in one message per
512 hashes to peers that negotiated ``.present_many``, one ``directory.present``
each to peers that did not; and the message's own checks."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from test_sync_support import Node, Wire, settle

from csembed.directory import sync_messages as msg
from csembed.protocol.wire import Message

WITH = frozenset({"database", "directory", "rsync", ".present_many"})
WITHOUT = frozenset({"database", "directory", "rsync"})
SHA = "ab" * 32


def _spy_types(node: Node) -> Counter[str]:
    """Counts the message types ``node``'s engine receives."""
    seen: Counter[str] = Counter()
    real = node.engine.receive

    def receive(conn_id, event, now):
        if isinstance(event, Message):
            seen[event.type] += 1
        return real(conn_id, event, now)

    node.engine.receive = receive  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("b_extensions", [WITH, WITHOUT], ids=["negotiated", "not offered"])
def test_a_scan_announces_its_files_in_batches(tmp_path: Path, b_extensions) -> None:
    a = Node(tmp_path, "a", extensions=WITH)
    b = Node(tmp_path, "b", extensions=b_extensions)
    wire = Wire(a, b)
    seen = _spy_types(b)
    for i in range(600):
        a.write(f"d{i % 3}/f{i:03d}", os.urandom(64))
    settle([a, b], [wire])
    assert a.tree() == b.tree()
    assert b.engine.stats()["files_fetched"] == 600
    if ".present_many" in b_extensions:
        assert seen[msg.PRESENT] == 0 and 1 <= seen[msg.PRESENT_MANY] <= 2  # 512 + 88
    else:
        assert seen[msg.PRESENT_MANY] == 0 and seen[msg.PRESENT] >= 600


def test_present_many_round_trips_and_refuses_bad_lists() -> None:
    message = msg.PresentMany((SHA, "CD" * 32))
    parsed = msg.PresentMany.from_body(message.to_body())
    assert parsed.sha256s == (SHA, "cd" * 32)  # read in any case, kept lower-case
    for bad in ([], None, SHA, [SHA, "xyz"], [SHA] * (msg.MAX_PRESENT_MANY + 1)):
        with pytest.raises(msg.SyncMessageError, match="sha256s"):
            msg.PresentMany.from_body({"type": msg.PRESENT_MANY, "sha256s": bad})
