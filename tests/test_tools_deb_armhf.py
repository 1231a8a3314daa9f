"""tools/build-deb on 32-bit Raspberry Pi OS (armhf), in an emulated chroot; opt-in.

Opt-in because it takes many minutes under qemu: set CSEMBED_ARMHF_CHROOT to
an armhf Debian bookworm root (tools/README.md, "Install it on Raspberry Pi
OS", gives the mmdebstrap line) with python3, python3-cffi, python3-serial,
gcc, make, python3-dev and libffi-dev, and run as root where
qemu-user-static's binfmt handlers are enabled. The test copies this source
tree into the chroot, builds the .deb there with no options (PyPI has no
armhf PyNaCl wheel and bookworm's libsodium is too old for PyNaCl 1.6, so
PyNaCl is compiled with its bundled libsodium), installs it with dpkg -i,
runs the CLI and a daemon from it as the service user, and purges it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent
ROOT_ENV = "CSEMBED_ARMHF_CHROOT"


def _root() -> Path:
    value = os.environ.get(ROOT_ENV)
    if not value:
        pytest.skip(f"opt-in: set {ROOT_ENV} to a ready armhf chroot (slow under qemu)")
    root = Path(value)
    if os.geteuid() != 0:
        pytest.skip("needs root to chroot")
    if not (root / "usr/bin/python3").exists() or not (root / "usr/bin/make").exists():
        pytest.fail(f"{root} lacks python3 or make; see tools/README.md")
    return root


def _chroot_env() -> dict[str, str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    if os.environ.get("PIP_CERT"):  # a proxy's CA on this host: the chroot's pip needs it too
        env["PIP_CERT"] = "/etc/ssl/csembed-test-host-ca.crt"
    return env


def inside(root: Path, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = _chroot_env()
    result = subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True,
                            timeout=timeout, env=env)
    assert result.returncode == 0, f"{argv}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


@pytest.mark.once
def test_armhf_deb_builds_in_the_chroot_installs_and_runs_the_daemon():
    root = _root()
    assert inside(root, "dpkg", "--print-architecture").stdout.strip() == "armhf"
    mounted = []
    for fs, point in (("proc", root / "proc"), ("/dev", root / "dev")):
        if subprocess.run(["mountpoint", "-q", str(point)]).returncode != 0:
            flags = ["-t", "proc"] if fs == "proc" else ["--bind"]
            subprocess.run(["mount", *flags, fs, str(point)], check=True)
            mounted.append(point)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")  # pip reaches PyPI
    if os.environ.get("PIP_CERT"):
        shutil.copy(os.environ["PIP_CERT"], root / "etc/ssl/csembed-test-host-ca.crt")
    work = root / "tmp/csembed-armhf-test"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(SOURCE, work / "src", ignore=shutil.ignore_patterns(
        ".git", ".venv", ".tox", "build", "*.egg-info", "__pycache__", "*.so"))
    daemon = None
    try:
        built = inside(root, "python3", "/tmp/csembed-armhf-test/src/tools/build-deb",
                       "--out", "/tmp/csembed-armhf-test/out", timeout=3600)
        deb = built.stdout.strip()
        assert deb.endswith("_armhf.deb")
        info = inside(root, "dpkg", "-I", deb).stdout
        assert "python3-cffi" in info and "libsodium" not in info  # libsodium is inside
        listing = inside(root, "dpkg", "-c", deb).stdout
        assert "_sodium.abi3.so" in listing and "_native.abi3.so" in listing
        inside(root, "dpkg", "-i", deb)
        assert "usage" in inside(root, "csembed", "--help").stdout.lower()
        assert "rpi-zero-2w" in inside(root, "csembed", "boards").stdout
        data = "/var/lib/csembed"
        daemon = subprocess.Popen(
            ["chroot", str(root), "runuser", "-u", "csembed", "--", "csembed", "daemon",
             "--data-dir", data, "--listen", "127.0.0.1:0", "--no-lan", "--board",
             "rpi-zero-2w"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=_chroot_env())
        assert daemon.stdout is not None
        line = daemon.stdout.readline()
        assert line.startswith("csembed daemon ready"), line + (
            daemon.stderr.read() if daemon.stderr else "")
        status = inside(root, "runuser", "-u", "csembed", "--", "csembed", "status",
                        "--json", "--data-dir", data)
        assert json.loads(status.stdout)["paused"] is False
        inside(root, "runuser", "-u", "csembed", "--", "csembed", "stop", "--data-dir", data)
        assert daemon.wait(120) == 0
        daemon = None
        inside(root, "dpkg", "--purge", "csembed")
        assert not (root / "usr/lib/csembed").exists()
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        subprocess.run(["chroot", str(root), "dpkg", "--purge", "csembed"],
                       capture_output=True, timeout=600)
        shutil.rmtree(work, ignore_errors=True)
        for point in reversed(mounted):
            subprocess.run(["umount", str(point)])
