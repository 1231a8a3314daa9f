"""tools/build-deb: the package builds, installs with dpkg -i, runs its daemon, and goes away."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from csembed.cli_commands.control_client import ControlClient

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))
from makerkit import deb_package  # noqa: E402


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to install a package"
    if shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None:
        return "needs dpkg (a Debian-like system)"
    if not Path("/usr/bin/python3").exists():
        return "needs the distribution's /usr/bin/python3"
    deps = subprocess.run(["dpkg", "-s", "python3-cffi", "python3-serial"], capture_output=True)
    if deps.returncode != 0:
        return "needs python3-cffi and python3-serial installed (apt-get install them)"
    if subprocess.run(["dpkg", "-s", "csembed"], capture_output=True).returncode == 0:
        return "a csembed package is already installed here; not touching it"
    return None


def dpkg(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["dpkg", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.once
def test_deb_builds_installs_runs_the_daemon_and_removes_cleanly(tmp_path):
    missing = _missing()
    if missing:
        pytest.skip(missing)
    built = subprocess.run([sys.executable, str(TOOLS / "build-deb"), "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    deb = Path(built.stdout.strip())
    info = dpkg("-I", str(deb)).stdout
    assert "python3-cffi" in info and "python3-serial" in info
    assert "./usr/lib/csembed/python/nacl/" in dpkg("-c", str(deb)).stdout  # PyNaCl vendored
    daemon = None
    try:
        dpkg("-i", str(deb))
        user = pwd.getpwnam("csembed")
        data = Path("/var/lib/csembed")
        assert data.stat().st_uid == user.pw_uid and data.stat().st_mode & 0o777 == 0o750
        assert Path("/lib/systemd/system/csembed.service").exists()
        daemon = subprocess.Popen(
            ["runuser", "-u", "csembed", "--", "/usr/bin/csembed", "daemon", "--data-dir",
             str(data), "--listen", "127.0.0.1:0", "--no-lan", "--board", "rpi-zero-2w"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert daemon.stdout is not None
        line = daemon.stdout.readline()
        assert line.startswith("csembed daemon ready"), daemon.stderr.read() if daemon.stderr \
            else line
        with ControlClient(data / "control", timeout=30) as client:
            status = client.call("status_detail")
        assert status["board"]["name"] == "rpi-zero-2w"
        shown = subprocess.run(["runuser", "-u", "csembed", "--", "/usr/bin/csembed",
                                "status", "--json", "--data-dir", str(data)],
                               capture_output=True, text=True, timeout=60)
        assert json.loads(shown.stdout)["paused"] is False, shown.stderr
        with ControlClient(data / "control", timeout=30) as client:
            client.call("stop")
        assert daemon.wait(30) == 0
        daemon = None
        dpkg("-r", "csembed")
        assert not Path("/usr/lib/csembed").exists() and not Path("/usr/bin/csembed").exists()
        assert data.exists()  # data is kept until purge
        dpkg("--purge", "csembed")
        assert not data.exists()
        with pytest.raises(KeyError):
            pwd.getpwnam("csembed")
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        subprocess.run(["dpkg", "--purge", "csembed"], capture_output=True, timeout=300)


def test_system_sodium_older_than_pynacl_needs_is_refused_before_building(tmp_path, monkeypatch):
    # bookworm's libsodium-dev is 1.0.18; a PyNaCl 1.6 built against it compiles
    # but fails to import (undefined symbol crypto_aead_aegis128l_npubbytes).
    (tmp_path / "sodium").mkdir()
    (tmp_path / "sodium/version.h").write_text('#define SODIUM_VERSION_STRING "1.0.18"\n')
    monkeypatch.setattr(deb_package, "SODIUM_HEADER_DIRS", (str(tmp_path),))
    assert deb_package.system_sodium_version() == (1, 0, 18)
    with pytest.raises(deb_package.BuildError, match=r"libsodium >= 1\.0\.20.*is 1\.0\.18"):
        deb_package._vendor_nacl(["false"], "system")
    (tmp_path / "sodium/version.h").write_text('#define SODIUM_VERSION_STRING "1.0.20"\n')
    assert deb_package.system_sodium_version() == (1, 0, 20)
    with pytest.raises(deb_package.BuildError, match="false"):  # passes the check, runs pip
        deb_package._vendor_nacl(["false"], "system")
