"""Share keys, peer IDs, grants, key records and the 0600 key file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from test_core_support import DeterministicRng

from csembed.security.errors import KeyFormatError
from csembed.security.key_file import read_private_json, write_private_json
from csembed.security.keys import (
    ACCESS_LEVELS,
    READ_ONLY,
    READ_WRITE,
    LevelKeys,
    ShareKeys,
    check_peer_id,
    new_peer_id,
)


def test_generation_uses_the_injected_rng_and_sizes() -> None:
    share = ShareKeys.generate(DeterministicRng("keys"))
    again = ShareKeys.generate(DeterministicRng("keys"))
    assert share.to_record() == again.to_record()
    assert [lv.access_level for lv in share.levels] == list(ACCESS_LEVELS)
    for level in share.levels:
        assert level.key is not None and level.key_id is not None
        assert level.signing_key is not None
        assert len(level.key) == len(level.key_id) == len(level.verify_key) == 32
        assert len(level.signing_key) == 32
    assert share.level(READ_WRITE).key != share.level(READ_ONLY).key
    peer = new_peer_id(DeterministicRng("peer"))
    assert len(peer) == 32 and check_peer_id(peer) == peer
    assert new_peer_id() != new_peer_id()  # default: the OS CSPRNG


def test_record_round_trip_and_validation() -> None:
    share = ShareKeys.generate(DeterministicRng("rec"))
    record = json.loads(json.dumps(share.to_record()))
    assert ShareKeys.from_record(record).to_record() == record
    bad = json.loads(json.dumps(record))
    bad["levels"][0]["verify_key"] = "00" * 32
    with pytest.raises(KeyFormatError, match="verify_key does not match signing_key"):
        ShareKeys.from_record(bad)
    bad = json.loads(json.dumps(record))
    bad["levels"][1]["key"] = "zz"
    with pytest.raises(KeyFormatError, match=r"key record\[1\] \(read_only\)\.key"):
        ShareKeys.from_record(bad)
    with pytest.raises(KeyFormatError, match="not a csembed-share-keys record"):
        ShareKeys.from_record({"levels": []})
    with pytest.raises(KeyFormatError, match="listed twice"):
        ShareKeys((share.levels[0], share.levels[0]))


def test_entry_without_verify_key_derives_it() -> None:
    level = LevelKeys.generate(READ_ONLY, DeterministicRng("entry"))
    entry = level.to_entry()
    del entry["verify_key"]
    assert LevelKeys.from_entry(entry).verify_key == level.verify_key
    with pytest.raises(KeyFormatError, match="needs 'verify_key' or 'signing_key'"):
        LevelKeys.from_entry({"access_level": READ_ONLY})


def test_grants() -> None:
    share = ShareKeys.generate(DeterministicRng("grant"))
    read_only = share.grant(READ_ONLY)
    assert read_only.level(READ_ONLY).to_entry() == share.level(READ_ONLY).to_entry()
    assert read_only.level(READ_WRITE).to_entry() == {
        "access_level": READ_WRITE, "verify_key": share.level(READ_WRITE).verify_key.hex()}
    assert share.grant(READ_WRITE).to_record() == share.to_record()
    with pytest.raises(KeyFormatError, match="not held in full"):
        read_only.grant(READ_WRITE)
    # secrets never appear in logs or tracebacks
    for secret in (share.level(READ_WRITE).key, share.level(READ_WRITE).signing_key):
        assert secret is not None and secret.hex() not in repr(share)


def test_private_json_file_is_0600_and_atomic(tmp_path: Path) -> None:
    share = ShareKeys.generate(DeterministicRng("file"))
    path = tmp_path / "keys.json"
    os.umask(0o022)
    write_private_json(path, share.to_record())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ShareKeys.from_record(read_private_json(path)).to_record() == share.to_record()
    write_private_json(path, {"replaced": True})  # replaces, still 0600, no temp left
    assert read_private_json(path) == {"replaced": True}
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]
    path.chmod(0o644)
    with pytest.raises(KeyFormatError, match="mode 0644 gives other users access"):
        read_private_json(path)
    path.chmod(0o600)
    path.write_text("{not json")
    with pytest.raises(KeyFormatError, match="not valid JSON"):
        read_private_json(path)
