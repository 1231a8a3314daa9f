"""SIGKILL campaign: two daemons killed at chosen moments while they sync and edit.

A and B share one folder. Each round (choices from a seeded RNG) makes some
edits on one side -- a big file, a burst of small files, modifications,
deletes, renames -- asks that side to rescan, waits for an *observed* moment
(a transfer under way on the receiver, the first files of a batch landed, a
scan just requested, a scan just finished and its records being written) and
then SIGKILLs the sender or the receiver. Before restarting the victim, every
SQLite database in its data directory must pass ``PRAGMA integrity_check``;
sometimes the victim's folder is edited while it is down. The two daemons
reach each other through fault proxies with a bandwidth cap, so a big
transfer lasts long enough to be interrupted, and on fixed ports so a
restarted daemon is found again at the same address.

Each side edits only its own subtree (``a/`` or ``b/``), so the expected end
state is exact: the test keeps a model of every file it wrote, and at the end
both trees must agree and match the model -- every edit present (as the file
or, where a kill made the engine see a conflict, as a ``CONFLICT`` copy), no
deleted file back, no content the test never wrote, no ``.!clearsky`` temp
file under a visible name (a partial download kept for resuming is a hidden
dot-file), no conflict copy identical to its file -- and every database
intact after the daemons stop.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Daemon,
    Procs,
    procs_fixture,
    short_tmp_fixture,
    tree,
    wait_for,
)

from csembed.lab.fault_proxy import FaultProxy, FaultProxyThread, Faults

KILLS = int(os.environ.get("CSEMBED_KILLS", "30"))  # more for a longer local campaign
SEED = int(os.environ.get("CSEMBED_KILL_SEED", "1010"))  # another seed: other rounds
LINK = Faults(bandwidth=3_000_000)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sqlite_files(data: Path) -> list[Path]:
    found = []
    for path in data.rglob("*"):
        if path.is_file() and not path.name.endswith(("-wal", "-shm", "-journal")):
            with path.open("rb") as handle:
                if handle.read(16) == b"SQLite format 3\x00":
                    found.append(path)
    return found


def _check_databases(data: Path) -> int:
    databases = _sqlite_files(data)
    for path in databases:
        with sqlite3.connect(path) as db:
            result = db.execute("PRAGMA integrity_check").fetchall()
        db.close()
        assert result == [("ok",)], f"{path}: {result}"
    return len(databases)


def _sigkill_and_restart(daemon: Daemon, between: Callable[[], None] | None = None) -> int:
    """SIGKILL ``daemon``, check its databases, run ``between``, start it again."""
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(30)
    daemon.stop()  # closes the log and pipe of the dead process
    checked = _check_databases(daemon.data)
    if between is not None:
        between()
    daemon._start()
    return checked


class Side:
    """One daemon, its folder, and the model of what the test wrote into its subtree."""

    def __init__(self, daemon: Daemon, root: Path, prefix: str, rng: random.Random) -> None:
        self.daemon = daemon
        self.root = root
        self.prefix = prefix
        self.rng = rng
        self.model: dict[str, str] = {}  #: what each path should hold now
        self.written: set[str] = set()  #: every content ever written
        self.history: list[str] = []  #: what happened to each path, for a failure report
        self.round = 0
        self.counter = 0

    def _new_name(self, ext: str) -> str:
        self.counter += 1
        return f"{self.prefix}/d{self.counter % 4}/f{self.counter:03d}{ext}"

    def write(self, name: str, size: int) -> None:
        data = f"{name} #{self.counter}\n".encode() + self.rng.randbytes(size)
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.model[name] = hashlib.sha256(data).hexdigest()
        self.written.add(self.model[name])
        self.history.append(f"round {self.round}: wrote {name} {self.model[name][:8]}")

    def add(self, size: int, ext: str = ".bin") -> str:
        name = self._new_name(ext)
        self.write(name, size)
        return name

    def mixed_edits(self, count: int) -> None:
        """Modify, delete and rename some existing files, add some new ones."""
        for _ in range(count):
            names = sorted(self.model)
            action = self.rng.choice(["add", "modify", "delete", "rename"] if names else ["add"])
            if action == "add":
                self.add(self.rng.randrange(10, 30_000), ".txt")
            elif action == "modify":
                self.write(self.rng.choice(names), self.rng.randrange(10, 30_000))
            elif action == "delete":
                name = self.rng.choice(names)
                (self.root / name).unlink()
                del self.model[name]
                self.history.append(f"round {self.round}: deleted {name}")
            else:
                old = self.rng.choice(names)
                new = self._new_name(Path(old).suffix)
                (self.root / new).parent.mkdir(parents=True, exist_ok=True)
                (self.root / old).rename(self.root / new)
                self.model[new] = self.model.pop(old)
                self.history.append(f"round {self.round}: renamed {old} -> {new}")

    def rescan(self) -> None:
        self.daemon.cli("rescan", self.root)


def _settled_tree(root: Path) -> dict[str, str]:
    """The tree without partial downloads (kept for resuming; see the final checks)."""
    return {n: h for n, h in tree(root).items() if not n.endswith(".!clearsky")}


def _conflict_of(name: str) -> str:
    """The path a conflict copy (``f001.CONFLICT.xyz.bin``) was kept for."""
    stem, _, rest = name.partition(".CONFLICT.")
    suffix = Path(rest).suffix
    return stem + suffix


def _transfers(daemon: Daemon) -> list[dict]:
    try:
        return daemon.call("list_transfers")["transfers"]
    except (OSError, AssertionError):
        return []


def _scans(side: Side) -> int:
    share = side.daemon.share(side.root) or {}
    return int(share.get("scans", 0))


def _moment(what: Callable[[], object], timeout: float = 20.0) -> bool:
    """Poll for a moment to kill at; False if it passed unseen (the kill happens anyway)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.once
def test_sigkill_campaign_loses_nothing_and_corrupts_nothing(procs: Procs) -> None:
    rng = random.Random(SEED)
    port_a, port_b = _free_port(), _free_port()
    to_a = FaultProxy(("127.0.0.1", 0), ("127.0.0.1", port_a), faults=LINK)
    to_b = FaultProxy(("127.0.0.1", 0), ("127.0.0.1", port_b), faults=LINK)
    with FaultProxyThread(to_a) as proxy_a, FaultProxyThread(to_b) as proxy_b:
        via_a = "{}:{}".format(*proxy_a.address)
        via_b = "{}:{}".format(*proxy_b.address)
        a = procs.daemon("a", "--peer", via_b, listen=f"127.0.0.1:{port_a}")
        b = procs.daemon("b", "--peer", via_a, listen=f"127.0.0.1:{port_b}")
        pa, pb = procs.root / "A", procs.root / "B"
        pa.mkdir()
        side_a = Side(a, pa, "a", rng)
        side_b = Side(b, pb, "b", rng)
        for _ in range(6):
            side_a.add(rng.randrange(1000, 50_000))
        code = json.loads(a.cli("share", pa, "--json").stdout)["access_code"]
        b.cli("attach", code, pb, "--json", "--timeout", "60")
        wait_for(lambda: tree(pa) == tree(pb), "the first sync")

        seen: dict[str, int] = {}
        rounds: list[str] = []
        kills = databases = 0

        def linked() -> bool:
            return all((d.share(p) or {}).get("peers", 0) >= 1 for d, p in ((a, pa), (b, pb)))

        started = time.monotonic()
        while kills < KILLS:
            wait_for(linked, "the daemons to be linked again", interval=0.05)
            source, other = (side_a, side_b) if rng.random() < 0.5 else (side_b, side_a)
            kind = rng.choice(["transfer", "landing", "scan", "written"])
            kill_source = rng.random() < 0.5
            if kind == "transfer":
                source.add(rng.randrange(2_500_000, 4_000_000))
                source.rescan()
                hit = _moment(lambda r=other.daemon: any(t["done"] > 0 for t in _transfers(r)))
            elif kind == "landing":
                batch = [source.add(rng.randrange(5_000, 40_000), ".take") for _ in range(30)]
                source.rescan()
                landed = [other.root / n for n in batch]
                hit = _moment(lambda paths=landed: any(p.exists() for p in paths))
            elif kind == "scan":
                source.mixed_edits(rng.randrange(20, 60))
                kill_source = True
                source.rescan()
                hit = True
            else:  # the scan finished: records are being written and announced
                before = _scans(source)
                source.mixed_edits(rng.randrange(5, 20))
                source.rescan()
                hit = _moment(lambda s=source, n=before: _scans(s) > n)
            victim = source if kill_source else other
            moment = f"{kind}{'+' if hit else '-'}"
            seen[moment] = seen.get(moment, 0) + 1
            rounds.append(f"round {kills}: {kind} on {source.prefix}, killed {victim.prefix} "
                          f"({'at' if hit else 'after missing'} the moment)")
            side_a.round = side_b.round = kills + 1

            def offline_edits(victim: Side = victim) -> None:
                victim.mixed_edits(rng.randrange(1, 6))

            databases += _sigkill_and_restart(
                victim.daemon, offline_edits if rng.random() < 0.25 else None)
            kills += 1

        def settled() -> bool:
            if _settled_tree(pa) == _settled_tree(pb):
                return True
            side_a.rescan()
            side_b.rescan()
            return False

        try:
            wait_for(settled, "the trees to agree after the campaign", timeout=120, interval=1.0)
        except AssertionError:
            ta, tb = _settled_tree(pa), _settled_tree(pb)
            diff = {n: (ta.get(n), tb.get(n)) for n in sorted(set(ta) | set(tb))
                    if ta.get(n) != tb.get(n)}
            told = [line for line in side_a.history + side_b.history
                    if any(n in line for n in diff)]
            raise AssertionError(f"trees differ: {diff}\nA: {a.share(pa)}\nB: {b.share(pb)}"
                                 f"\nmoments: {seen}\npaths: {told}\nrounds: {rounds}") from None
        final = tree(pa)
        elapsed = time.monotonic() - started
        conflicts = sorted(n for n in final if "CONFLICT" in n)
        temps = sorted(n for n in final if n.endswith(".!clearsky"))
        duplicates = [n for n in conflicts if final[n] == final.get(_conflict_of(n))]
        print(f"{kills} kills in {elapsed:.0f} s; moments (+ seen, - passed unseen): {seen}; "
              f"databases checked: {databases}; conflict copies: {len(conflicts)} "
              f"({len(duplicates)} identical to their file); temp files left: {temps}")
        # a copy identical to its file is a conflict nobody caused (a landing cut short)
        assert not duplicates, duplicates
        written = side_a.written | side_b.written
        for side in (side_a, side_b):
            for name, digest in side.model.items():
                copies = [final.get(name)] + [final[n] for n in conflicts
                                              if _conflict_of(n) == name]
                assert digest in copies, f"lost edit: {name} (have {copies})"
            kept = {n for n, h in final.items() if n.startswith(side.prefix + "/")
                    and h != "dir" and n not in conflicts and n not in temps}
            back = kept - set(side.model)
            assert not back, f"deleted or renamed away, yet back: {back}"
        for name, digest in final.items():
            if digest not in ("dir", "partial"):
                assert digest in written, f"{name} holds content the test never wrote"
        # partial downloads kept for resuming are hidden; a user never sees them
        assert all(Path(n).name.startswith(".") for n in temps), temps
        assert kills >= 30 and databases >= kills
        a.stop()
        b.stop()
        assert _check_databases(a.data) and _check_databases(b.data)


def _skip(engine: object, method: str) -> None:
    """Make the engine skip one disk step, as if killed between the record and the disk."""
    for owner in (engine, getattr(getattr(engine, "ctx", None), "planner", None)):
        if owner is not None and hasattr(owner, method):
            setattr(owner, method, lambda *args, **kwargs: None)
            return
    raise LookupError(f"the engine has no {method}")


def test_a_rename_recorded_just_before_a_crash_is_still_followed(tmp_path: Path) -> None:
    from test_sync_support import Node, Wire, settle

    a, b = Node(tmp_path, "a"), Node(tmp_path, "b", seed=2)
    a.write("x/take.txt", b"one take")
    wire = Wire(a, b)
    settle([a, b], [wire])
    (a.root / "x/take.txt").rename(a.root / "x/best take.txt")
    _skip(b.engine, "_follow_rename")  # B records the rename, then "dies" before moving
    settle([a, b], [wire])
    wire.disconnect()
    b.restart()
    settle([a, b], [Wire(a, b)])
    assert b.tree() == a.tree()


def test_a_landing_cut_short_by_a_kill_makes_no_conflict_copy(tmp_path: Path) -> None:
    from test_sync_support import Node, Wire, settle

    a, b = Node(tmp_path, "a"), Node(tmp_path, "b", seed=2)
    a.write("x/take.txt", b"first take")
    wire = Wire(a, b)
    settle([a, b], [wire])
    before = b.local.cache.get("/x/take.txt")
    assert before is not None
    a.write("x/take.txt", b"second take, longer")
    settle([a, b], [wire])
    assert (b.root / "x/take.txt").read_bytes() == b"second take, longer"
    b.local.cache.put(before)  # as if killed between the rename and the cache commit
    b.local.cache.commit()
    wire.disconnect()
    b.restart()
    a.write("x/take.txt", b"third take, longer still")
    a.scan()
    wire = Wire(a, b)
    settle([a, b], [wire], scan=False)  # the third take arrives before B rescans
    settle([a, b], [wire])
    assert b.tree() == a.tree()
    assert not [n for n in b.tree() if "CONFLICT" in n]


def _landing_cut_short(tmp_path: Path):  # -> (a, b): B's cache row of x/take.txt is stale
    from test_sync_support import Node, Wire, settle

    a, b = Node(tmp_path, "a"), Node(tmp_path, "b", seed=2)
    a.write("x/take.txt", b"first take")
    wire = Wire(a, b)
    settle([a, b], [wire])
    before = b.local.cache.get("/x/take.txt")
    assert before is not None
    a.write("x/take.txt", b"second take, longer")
    settle([a, b], [wire])
    b.local.cache.put(before)  # as if killed between the rename and the cache commit
    b.local.cache.commit()
    wire.disconnect()
    b.restart()
    return a, b


def test_a_landing_cut_short_is_no_edit_when_the_next_version_comes_first(
        tmp_path: Path) -> None:
    from test_sync_support import Wire, settle

    a, b = _landing_cut_short(tmp_path)
    a.write("x/take.txt", b"third take, longer still")
    a.scan()
    wire = Wire(a, b)
    while wire.step():  # the third take's record is applied before anything else runs
        pass
    settle([a, b], [wire])
    assert b.tree() == a.tree()
    assert not [n for n in b.tree() if "CONFLICT" in n]


def test_a_landing_cut_short_then_scanned_writes_no_version_of_its_own(
        tmp_path: Path) -> None:
    from test_sync_support import Wire, settle

    a, b = _landing_cut_short(tmp_path)
    b.scan()  # B's scan comes first and finds the file unlike its cache row
    record = b.engine.replica.get("/x/take.txt")
    assert record is not None and record.last_updated_by == a.peer_id
    a.write("x/take.txt", b"third take, longer still")  # meanwhile, on A
    a.scan()
    settle([a, b], [Wire(a, b)])
    assert b.tree() == a.tree()
    assert not [n for n in b.tree() if "CONFLICT" in n]
