"""tools/check_layers.py: csembed's imports follow DESIGN.md's layers, and the check can fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "check_layers.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, check=False)


def write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "csembed"
    for name, text in files.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_the_tree_keeps_its_layers() -> None:
    result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "layers ok" in result.stdout


def test_help_names_the_layers() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "runtime" in result.stdout and "protocol" in result.stdout


def test_an_import_up_a_layer_fails_naming_file_line_and_layers(tmp_path: Path) -> None:
    pkg = write(tmp_path, {
        "protocol/__init__.py": "",
        "protocol/wire.py": '"""Wire."""\n\nimport json\n'
                            "from csembed.runtime.daemon import Daemon\n",
        "runtime/__init__.py": "",
        "runtime/daemon.py": "class Daemon: ...\n",
    })
    result = run(str(pkg))
    assert result.returncode == 1
    assert f"{pkg / 'protocol' / 'wire.py'}:4: up a layer: protocol (protocol) imports " \
           "runtime (runtime)" in result.stdout


def test_a_cycle_within_a_layer_fails(tmp_path: Path) -> None:
    pkg = write(tmp_path, {
        "protocol/__init__.py": "",
        "protocol/core.py": "from csembed.security import handshake\n",
        "security/__init__.py": "",
        "security/handshake.py": "def f():\n    from ..protocol import core\n",
    })
    result = run(str(pkg))
    assert result.returncode == 1
    assert "security/handshake.py:2: package cycle: security (protocol) imports protocol" \
        in result.stdout
    assert "protocol/core.py:1: package cycle" in result.stdout


@pytest.mark.parametrize("text", [
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from csembed.runtime import x\n",
    "from csembed.protocol import wire\nimport csembed.errors\n",
])
def test_allowed_imports_pass(tmp_path: Path, text: str) -> None:
    pkg = write(tmp_path, {"directory/engine.py": text, "runtime/x.py": "",
                           "protocol/wire.py": "", "errors.py": ""})
    result = run(str(pkg))
    assert result.returncode == 0, result.stdout


def test_a_package_missing_from_the_map_is_reported(tmp_path: Path) -> None:
    pkg = write(tmp_path, {"newthing/a.py": "from csembed.protocol import wire\n",
                           "protocol/wire.py": ""})
    result = run(str(pkg))
    assert result.returncode == 2
    assert "newthing" in result.stdout


def test_asyncio_in_a_sans_io_package_fails(tmp_path: Path) -> None:
    pkg = write(tmp_path, {
        "discovery/lan_service.py": '"""LAN."""\nimport asyncio\n',
        "runtime/lan.py": "import asyncio\nimport socket\n",
    })
    result = run(str(pkg))
    assert result.returncode == 1
    assert "discovery/lan_service.py:2: I/O in a sans-I/O layer: discovery (protocol) " \
           "imports asyncio" in result.stdout
    assert "runtime/lan.py" not in result.stdout
