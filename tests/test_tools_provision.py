"""tools/provision over a pty pair against a real daemon on its --control-serial line.

The daemon opens the slave of one pty, the tool (through pyserial) the slave
of another; a thread copies bytes between the two masters, as the USB cable
between a device's gadget port and a host's /dev/ttyACM0 would.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import tty
from pathlib import Path

import pytest
from test_daemon_support import Procs, procs_fixture, short_tmp_fixture, wait_for  # noqa: F401

TOOLS = Path(__file__).resolve().parent.parent / "tools"


class Cable:
    """Two pty pairs joined master to master by a copying thread."""

    def __init__(self) -> None:
        self.dev_master, self.dev_slave = os.openpty()
        self.host_master, self.host_slave = os.openpty()
        self.device = os.ttyname(self.dev_slave)
        self.host = os.ttyname(self.host_slave)
        for fd in (self.dev_slave, self.host_slave):  # no echo before either end opens it
            tty.setraw(fd)
        self._stop = os.pipe()
        self._thread = threading.Thread(target=self._copy, daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        pairs = {self.dev_master: self.host_master, self.host_master: self.dev_master}
        while True:
            ready, _, _ = select.select([*pairs, self._stop[0]], [], [])
            if self._stop[0] in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # the other side closed for now (EIO); wait for more
                    continue
                view = memoryview(data)
                while view:
                    view = view[os.write(pairs[fd], view):]

    def close(self) -> None:
        os.write(self._stop[1], b"x")
        self._thread.join(10)
        for fd in (self.dev_master, self.dev_slave, self.host_master, self.host_slave,
                   *self._stop):
            os.close(fd)


@pytest.fixture(name="cable")
def cable_fixture():
    cable = Cable()
    try:
        yield cable
    finally:
        cable.close()


def provision(cable: Cable, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, str(TOOLS / "provision"), cable.host,
                             "--timeout", "30", *args],
                            capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.once
def test_provision_names_pairs_and_self_tests_a_device_over_serial(procs: Procs, cable: Cable):
    device = procs.daemon("device", "--control-serial", f"{cable.device},115200",
                          board="wifi-piano")
    status = json.loads(provision(cable, "--json", "status").stdout)
    assert status["board"]["name"] == "wifi-piano" and status["listen"] == device.address

    provision(cable, "name", "piano-0042")
    provision(cable, "tracker", "127.0.0.1:9")
    assert device.call("get_config_value", key="device_name")["value"] == "piano-0042"
    assert device.call("get_config_value", key="tracker")["value"] == "127.0.0.1:9"
    provision(cable, "tracker", "none")
    assert device.call("get_config_value", key="tracker")["value"] is None

    recordings = procs.root / "recordings"
    recordings.mkdir()
    shown = provision(cable, "code", str(recordings), "--mode", "read-only").stdout
    code = shown.splitlines()[0]
    assert code.startswith("SYNC") and ("▀" in shown or "█" in shown)  # the QR code is drawn
    # the code is real: the owner's laptop joins with it and gets the device's recording
    (recordings / "take1.wav").write_bytes(b"RIFF" + os.urandom(5000))
    laptop = procs.daemon("laptop", "--peer", device.address)
    mine = procs.root / "mine"
    laptop.cli("attach", code, mine)
    wait_for(lambda: (mine / "take1.wav").exists()
             and (mine / "take1.wav").read_bytes() == (recordings / "take1.wav").read_bytes(),
             "the laptop to receive the recording")
    # and the other way: attach the device to the owner's share
    owner = procs.root / "owner"
    owner.mkdir()
    (owner / "score.mid").write_bytes(b"MThd" + os.urandom(300))
    owner_code = json.loads(laptop.cli("share", owner, "--json").stdout)["access_code"]
    device.call("set_config_value", key="peers", value=[laptop.address])  # the device dials
    provision(cable, "attach", owner_code, str(procs.root / "scores"))
    wait_for(lambda: (procs.root / "scores" / "score.mid").exists(),
             "the device to receive the owner's score")

    scratch = procs.root / "scratch"
    scratch.mkdir()
    report = provision(cable, "--json", "selftest", "--scratch", str(scratch))
    result = json.loads(report.stdout)
    assert result["ok"], report.stdout
    assert [c["check"] for c in result["checks"]] == ["daemon", "storage", "link", "clock"]
    assert str(scratch) not in {s["path"] for s in device.call("list_shares")["shares"]}

    # a device whose clock is far off fails the clock check (host told to allow 0 s skew
    # is the stand-in: the device's stamp is always a little in the past)
    scratch2 = procs.root / "scratch2"
    scratch2.mkdir()
    bad = provision(cable, "selftest", "--scratch", str(scratch2), "--max-skew", "0",
                    check=False)
    assert bad.returncode == 1 and "clock    FAIL" in bad.stdout, bad.stdout


def test_provision_reports_a_silent_line(cable: Cable):
    result = provision(cable, "--timeout", "1", "status", check=False)
    assert result.returncode == 2 and "no answer from the device" in result.stderr
