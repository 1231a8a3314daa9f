"""SHA-256 and BLAKE2b from csembed.digests: the board picks the implementation,
the digests never change, and the builtin choice keeps OpenSSL out of the process."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from csembed import digests


@pytest.fixture(autouse=True)
def _restore_choice() -> Iterator[None]:
    before = digests.sha256_in_use()
    yield
    digests.use_sha256(before)


@pytest.mark.parametrize("implementation", digests.SHA256_IMPLEMENTATIONS)
def test_each_implementation_gives_hashlibs_digests(implementation: str) -> None:
    digests.use_sha256(implementation)
    assert digests.sha256_in_use() == implementation
    data = bytes(range(256)) * 700
    h = digests.sha256(data[:10])
    h.update(memoryview(data)[10:])
    twin = h.copy()
    twin.update(b"more")
    assert h.digest() == hashlib.sha256(data).digest()
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    assert twin.digest() == hashlib.sha256(data + b"more").digest()
    assert digests.sha256().hexdigest() == hashlib.sha256(b"").hexdigest()


def test_keyed_blake2b_matches_hashlib() -> None:
    key = bytes(range(32))
    assert digests.blake2b_256(b"purpose", key=key) == \
        hashlib.blake2b(b"purpose", digest_size=32, key=key).digest()
    assert digests.blake2b_256(b"") == hashlib.blake2b(b"", digest_size=32).digest()


def test_an_unknown_implementation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown SHA-256 implementation 'md5'"):
        digests.use_sha256("md5")


def _loaded_after(implementation: str) -> list[str]:
    probe = ("import sys\nfrom csembed import digests\n"
             f"digests.use_sha256({implementation!r})\n"
             "assert digests.sha256(b'abc').hexdigest().startswith('ba7816bf')\n"
             "digests.blake2b_256(b'x', key=b'k')\n"
             "print(' '.join(m for m in ('hashlib', '_hashlib', 'hmac', 'secrets')"
             " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_builtin_sha256_never_loads_openssl_and_openssl_does() -> None:
    assert _loaded_after("builtin") == []
    assert "_hashlib" in _loaded_after("openssl")
