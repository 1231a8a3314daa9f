"""Build a .deb of csembed for Debian and Raspberry Pi OS with dpkg-deb.

Theory of operation. The package keeps csembed in a private directory,
``/usr/lib/csembed/python``, installed there by pip from the source tree on
the build machine (``pip install --no-deps --target``), so the C extension
(``csembed/_native.abi3.so``, stable ABI: any Python 3 from 3.11 on) is
compiled for the machine that builds it -- build on the target, or in a
chroot of the target's architecture. ``/usr/bin/csembed`` is a small wrapper
that puts that directory first on ``sys.path`` and runs the CLI with the
distribution's ``/usr/bin/python3``.

PyNaCl: csembed needs 1.6 or later (``crypto_core_ed25519_from_uniform``);
Debian bookworm (and Raspberry Pi OS based on it) ships 1.5. With ``--nacl
vendor`` (the default) a PyNaCl wheel (libsodium inside) is installed into
the private directory and the package depends only on ``python3-cffi``; with
``--nacl system`` it depends on ``python3-nacl (>= 1.6)`` (Debian trixie).
``segno`` (QR codes for provisioning) is always vendored; it is pure Python.
PyPI has PyNaCl wheels (libsodium inside) for amd64 and arm64 but none for
32-bit ARM (armhf). ``--sodium bundled`` (the default) asks pip for a wheel
and, where there is none, compiles PyNaCl from its source distribution with
the libsodium it bundles (needs ``make``, ``libffi-dev`` and a compiler on the
build machine only; pip caches the result, so a rebuild is quick). ``--sodium
system`` links the distribution's libsodium instead (``SODIUM_INSTALL=system``,
package depends on ``libsodium23``), but PyNaCl 1.6 needs libsodium 1.0.20
and bookworm has 1.0.18 -- such a build compiles and then fails at import --
so the version in ``sodium/version.h`` is checked first. Whatever the route,
the staged package is imported before it is packed.

The service: a system user ``csembed``, the data directory ``/var/lib/csembed``
(made by ``postinst``, removed with the user on purge), a systemd unit and
``/etc/default/csembed`` (a conffile) for the board, address and options.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # tools/
DEB_FILES = HERE / "deb"
NACL_MIN = "1.6"
SODIUM_HEADER_DIRS = ("/usr/include", "/usr/local/include")
SODIUM_MIN = (1, 0, 20)  # PyNaCl 1.6 binds crypto_aead_aegis*, new in libsodium 1.0.20

WRAPPER = """#!/usr/bin/python3
# csembed, as installed by the csembed .deb: the package lives in a private directory.
import sys

sys.dont_write_bytecode = True  # keep /usr/lib/csembed exactly as dpkg installed it
sys.path.insert(0, "/usr/lib/csembed/python")
from csembed.cli import main  # noqa: E402

sys.exit(main())
"""


class BuildError(Exception):
    """The package could not be built; the message says why."""


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True,
                            env=None if env is None else {**os.environ, **env})
    if result.returncode != 0:
        raise BuildError(f"{' '.join(argv)} failed:\n{result.stdout[-2000:]}"
                         f"{result.stderr[-2000:]}")
    return result.stdout


def _installed_size_kib(root: Path) -> int:
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()
                and "DEBIAN" not in p.parts)
    return (total + 1023) // 1024


def system_sodium_version() -> tuple[int, ...] | None:
    """The version of the system's libsodium headers (libsodium-dev), or None."""
    for folder in SODIUM_HEADER_DIRS:
        header = Path(folder, "sodium/version.h")
        if header.exists():
            found = re.search(r'SODIUM_VERSION_STRING\s+"([0-9.]+)"', header.read_text())
            if found:
                return tuple(int(part) for part in found.group(1).split("."))
    return None


def _vendor_nacl(pip: list[str], sodium: str) -> str:
    """Put PyNaCl into the private directory; returns the libsodium it uses."""
    spec = f"PyNaCl>={NACL_MIN}"
    if sodium == "system":
        have = system_sodium_version()
        if have is None or have < SODIUM_MIN:
            shown = "none" if have is None else ".".join(map(str, have))
            raise BuildError(
                f"--sodium system: PyNaCl >= {NACL_MIN} needs libsodium >= "
                f"{'.'.join(map(str, SODIUM_MIN))} (it binds the AEGIS ciphers); the system's "
                f"libsodium-dev is {shown} (Debian bookworm has 1.0.18). Use --sodium bundled")
        _run([*pip, "--no-binary", "PyNaCl", spec], env={"SODIUM_INSTALL": "system"})
        return "system"
    wheel = subprocess.run([*pip, "--only-binary", "PyNaCl", spec],
                           capture_output=True, text=True)
    if wheel.returncode == 0:
        return "bundled"
    if "No matching distribution" not in wheel.stderr:
        raise BuildError(f"installing a PyNaCl wheel failed:\n{wheel.stderr[-2000:]}")
    # No wheel for this machine (armhf): compile PyNaCl and the libsodium it
    # bundles, once, here; the devices then install the .deb with no build.
    if shutil.which("make") is None:
        raise BuildError("PyPI has no PyNaCl wheel for this machine (32-bit ARM has none), so "
                         "it is compiled with its bundled libsodium: apt install make gcc "
                         "libffi-dev python3-dev, then run build-deb again")
    jobs = str(os.cpu_count() or 1)
    # No --no-binary here: pip then builds from the sdist but reuses the wheel it
    # cached on an earlier build, so rebuilding the package takes minutes, not a quarter hour.
    _run([*pip, spec], env={"LIBSODIUM_MAKE_ARGS": f"-j{jobs}"})
    return "bundled"


def _check_imports(private: Path, python: str) -> None:
    """Load the staged csembed and PyNaCl as the package will, before packing them."""
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import nacl.bindings; "
             "import csembed.cli, csembed.security")
    result = subprocess.run([python, "-c", probe, str(private)], capture_output=True,
                            text=True, cwd="/")
    if result.returncode != 0:
        raise BuildError("the staged package does not load:\n" + result.stderr[-2000:])


def build(source: Path, out: Path, *, nacl: str = "vendor", python: str = sys.executable,
          arch: str | None = None, sodium: str = "bundled") -> Path:
    """Build the package from ``source`` into folder ``out``; returns the .deb's path."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    version = project["version"]
    arch = arch or _run(["dpkg", "--print-architecture"]).strip()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="csembed-deb-") as tmp:
        stage = Path(tmp) / f"csembed_{version}_{arch}"
        private = stage / "usr/lib/csembed/python"
        pip = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
               "--target", str(private)]
        _run([*pip, str(source)])
        if not list((private / "csembed").glob("_native*.so")):
            raise BuildError("the C extension was not built (is a C compiler installed?)")
        _run([*pip, "segno"])
        if nacl == "vendor":
            sodium = _vendor_nacl(pip, sodium)
        shutil.rmtree(private / "bin", ignore_errors=True)
        if arch == _run(["dpkg", "--print-architecture"]).strip():
            _check_imports(private, python)
        for cache in list(private.rglob("__pycache__")):
            shutil.rmtree(cache)
        (stage / "usr/bin").mkdir(parents=True)
        (stage / "usr/bin/csembed").write_text(WRAPPER)
        (stage / "usr/bin/csembed").chmod(0o755)
        unit = stage / "lib/systemd/system/csembed.service"
        unit.parent.mkdir(parents=True)
        shutil.copy(DEB_FILES / "csembed.service", unit)
        (stage / "etc/default").mkdir(parents=True)
        shutil.copy(DEB_FILES / "default", stage / "etc/default/csembed")
        doc = stage / "usr/share/doc/csembed"
        doc.mkdir(parents=True)
        shutil.copy(source / "README.md", doc / "README.md")
        if (HERE / "README.md").exists():
            shutil.copy(HERE / "README.md", doc / "MAKERS.md")
        control = stage / "DEBIAN"
        control.mkdir()
        depends = ["python3 (>= 3.11)", "python3-cffi", "python3-serial"]
        if nacl == "system":
            depends.append(f"python3-nacl (>= {NACL_MIN})")
        elif sodium == "system":
            depends.append("libsodium23")
        (control / "control").write_text(
            f"Package: csembed\nVersion: {version}\nArchitecture: {arch}\n"
            "Maintainer: csembed developers <csembed@localhost>\n"
            f"Installed-Size: {_installed_size_kib(stage)}\n"
            f"Depends: {', '.join(depends)}\n"
            "Section: net\nPriority: optional\n"
            "Description: ClearSkies friend-to-friend directory sync for small devices\n"
            " csembed syncs folders between devices admitted by short access codes,\n"
            " with no server in between; it runs as a systemd service under its own\n"
            " user, within the limits of a board profile.\n")
        (control / "conffiles").write_text("/etc/default/csembed\n")
        for script in ("postinst", "prerm", "postrm"):
            shutil.copy(DEB_FILES / script, control / script)
            (control / script).chmod(0o755)
        for path in stage.rglob("*"):  # dpkg-deb wants sane modes whatever the umask was
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        target = out / f"csembed_{version}_{arch}.deb"
        _run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(stage), str(target)])
    return target


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tools/build-deb``."""
    p = argparse.ArgumentParser(
        prog="build-deb",
        description="Build a csembed .deb for Debian / Raspberry Pi OS on this machine (its "
                    "architecture, its C compiler). Install with: sudo dpkg -i FILE.deb "
                    "(or sudo apt install ./FILE.deb to pull in the dependencies).")
    p.add_argument("--source", type=Path, default=HERE.parent,
                   help="the csembed source tree (default: the one holding this tool)")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the .deb (.)")
    p.add_argument("--nacl", choices=["vendor", "system"], default="vendor",
                   help=f"vendor a PyNaCl >= {NACL_MIN} wheel (default; for bookworm, whose "
                        "python3-nacl is 1.5) or depend on the distribution's (trixie)")
    p.add_argument("--sodium", choices=["bundled", "system"], default="bundled",
                   help="with --nacl vendor: 'bundled' (default) vendors PyNaCl with its own "
                        "libsodium -- PyPI's wheel, or where there is none (armhf) compiled "
                        "here, which needs make and takes long; 'system' builds PyNaCl "
                        "against the system's libsodium-dev, which must be >= 1.0.20 "
                        "(bookworm's is 1.0.18), and depends on libsodium23")
    p.add_argument("--python", default=sys.executable,
                   help="the Python whose pip builds the package (default: this one)")
    p.add_argument("--arch", help="Debian architecture (default: dpkg --print-architecture)")
    args = p.parse_args(argv)
    if shutil.which("dpkg-deb") is None:
        print("build-deb: dpkg-deb not found (install dpkg)", file=sys.stderr)
        return 2
    try:
        path = build(args.source.resolve(), args.out, nacl=args.nacl, python=args.python,
                     arch=args.arch, sodium=args.sodium)
    except BuildError as exc:
        print(f"build-deb: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
