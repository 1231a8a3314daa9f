"""tools/boardsim: the scenarios pass for wifi-piano and rpi-zero-2w under their real limits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))

from makerkit import svg_plot  # noqa: E402
from makerkit.boardsim import SCENARIOS, Report, ScenarioResult  # noqa: E402


def _lab_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc, mount, cgroups)"
    for tool in ("ip", "tc", "mount"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    probe = subprocess.run(["ip", "netns", "add", "csbs-probe"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot make network namespaces: {probe.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "delete", "csbs-probe"], capture_output=True)
    return None


@pytest.mark.once
def test_scenarios_pass_on_the_piano_and_the_zero_2w(tmp_path):
    missing = _lab_missing()
    if missing:
        pytest.skip(missing)
    runs = {}
    for board in ("wifi-piano", "rpi-zero-2w"):  # in parallel: separate namespaces and cgroups
        runs[board] = subprocess.Popen(
            [sys.executable, str(TOOLS / "boardsim"), board, "--json", "--recordings", "3",
             "--size", "262144", "--timeout", "90", "--plot", str(tmp_path / f"{board}.svg"),
             "--workdir", str(tmp_path / board)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for board, proc in runs.items():
        out, err = proc.communicate(timeout=600)
        report = json.loads(out)
        logs = "".join(p.read_text()[-3000:] for p in (tmp_path / board).glob("*.log"))
        assert proc.returncode == 0 and report["ok"], f"{out}\n{err}\n{logs}"
        assert [s["name"] for s in report["scenarios"]] == list(SCENARIOS)
        assert all(s["ok"] for s in report["scenarios"])
        assert report["board"] == board
        assert 0 < report["peak_rss"]
        if "loop" in report["setup"]["flash"]:
            assert report["flash_bytes_per_byte_synced"] is not None
            assert 0 < report["flash_written"]
        assert "tbf" in report["setup"]["link"]
        assert (tmp_path / f"{board}.svg").read_text().startswith("<svg")
    assert not [line for line in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                text=True).stdout.splitlines()
                if line.startswith("csbs-") and line != "csbs-probe"]  # cleaned up
    assert str(tmp_path) not in subprocess.run(["losetup", "-a"], capture_output=True,
                                               text=True).stdout


def test_report_text_and_plot_without_a_lab(tmp_path):
    report = Report("wifi-piano", {"link": "1 MB/s"}, peak_rss=40 << 20, ram_budget=64 << 20,
                    flash_written=1 << 20, bytes_synced=10 << 20)
    report.scenarios = [ScenarioResult("save", True, 3.2, "3 recordings", 10 << 20, (0, 3.2)),
                        ScenarioResult("edit", False, 90.0, "did not arrive", 0, (3.2, 93.2))]
    text = report.text()
    assert "save        PASS" in text and "edit        FAIL" in text
    assert "within" in text and "0.100" in text and "SOME SCENARIOS FAILED" in text
    assert report.as_dict()["flash_bytes_per_byte_synced"] == 0.1
    svg = svg_plot.render([svg_plot.Series("rss", "MiB", ((0, 1.0), (2, 3.0)), limit=4.0)],
                          [("save", 0, 1)], "t")
    assert svg.count("<polyline") == 1 and "stroke-dasharray" in svg and "save" in svg
