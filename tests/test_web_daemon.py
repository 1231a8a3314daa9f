"""The web page of a real daemon: over loopback HTTP, and in headless Chromium.

The daemons are real subprocesses (``csembed daemon --web ...``) driven through
the CLI; the page is fetched with ``http.client`` over 127.0.0.1, and in the
Chromium test loaded by a real browser, driven through the DevTools protocol
on a pipe (``--remote-debugging-pipe``: NUL-separated JSON on descriptors 3
and 4), which clicks the button, sees a code and its QR image, and saves a
screenshot to ``$CSEMBED_ARTIFACTS`` (else the test's tmp_path).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Daemon,
    Procs,
    cli,
    procs_fixture,
    short_tmp_fixture,
    tree,
    wait_for,
)

CODE = re.compile(r"SYNC[A-Z2-7]{29}")


def web_port(daemon: Daemon) -> int:
    """The page's port, from the daemon's ready line."""
    match = re.search(r"web page http://[^ ]+:(\d+)/$", daemon.ready_line)
    assert match, daemon.ready_line
    return int(match.group(1))


def fetch(port: int, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def csrf_token(page: bytes) -> str:
    match = re.search(rb'name="csrf-token" content="([0-9a-f]{64})"', page)
    assert match, page[:500]
    return match.group(1).decode()


def issue_code(port: int, token: str, path: Path, **headers: str) -> tuple[int, dict[str, Any]]:
    status, _, body = fetch(port, "POST", "/api/code",
                            json.dumps({"path": str(path), "mode": "read_write"}).encode(),
                            {"Content-Type": "application/json", "X-CSRF-Token": token,
                             **headers})
    return status, json.loads(body)


@pytest.mark.once
def test_page_shows_the_share_and_issues_a_code_another_daemon_redeems(procs: Procs) -> None:
    a = procs.daemon("a", "--web", "127.0.0.1:0")
    b = procs.daemon("b", "--peer", a.address)
    pa, pb = procs.root / "A", procs.root / "B"
    pa.mkdir()
    (pa / "etude.mid").write_bytes(b"MThd" + os.urandom(2000))
    a.cli("share", pa, "--json")
    port = web_port(a)

    status, headers, page = fetch(port, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    token = csrf_token(page)
    status, _, body = fetch(port, "GET", "/api/status")
    assert status == 200
    shares = json.loads(body)["status"]["shares"]
    assert [s["path"] for s in shares] == [str(pa)]

    # DNS rebinding: a foreign Host is refused; no token or a foreign Origin: no code
    assert fetch(port, "GET", "/api/status", headers={"Host": "evil.example"})[0] == 403
    assert issue_code(port, "0" * 64, pa)[0] == 403
    assert issue_code(port, token, pa, Origin="http://evil.example")[0] == 403
    assert fetch(port, "GET", "/api/code")[0] == 405
    assert fetch(port, "GET", "/nothing")[0] == 404
    status, reply = issue_code(port, token, procs.root / "not-a-share")
    assert status == 404 and reply["error"] == "no_such_share"

    status, reply = issue_code(port, token, pa)
    assert status == 200 and CODE.fullmatch(reply["access_code"])
    assert reply["qr"].startswith("data:image/svg+xml")
    # the code is real: B joins with it through the CLI and receives the file
    b.cli("attach", reply["access_code"], pb, "--timeout", "60")
    wait_for(lambda: tree(pa) == tree(pb), "B to receive A's file")
    wait_for(lambda: any(p.get("state") == "connected" for p in
                         json.loads(fetch(port, "GET", "/api/status")[2])["peers"]),
             "the page to list B as a connected peer")


def test_a_lan_page_needs_a_password(procs: Procs) -> None:
    refused = cli("daemon", "--data-dir", procs.root / "x-data", "--listen", "127.0.0.1:0",
                  "--no-lan", "--web", "0.0.0.0:0", check=False, timeout=60)
    assert refused.returncode == 2 and "set a password" in refused.stderr
    a = procs.daemon("a", "--web", "0.0.0.0:0", "--web-password", "piano-secret")
    port = web_port(a)
    assert fetch(port, "GET", "/")[0] == 401
    status, headers, _ = fetch(port, "GET", "/api/status", headers={
        "Authorization": "Basic " + base64.b64encode(b"me:wrong-one").decode()})
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    good = {"Authorization": "Basic " + base64.b64encode(b"me:piano-secret").decode()}
    status, _, page = fetch(port, "GET", "/", headers=good)
    assert status == 200 and b"csrf-token" in page
    # a slow sender is cut off at the bound, a huge head refused: the daemon stays up
    assert fetch(port, "GET", "/" + "a" * 5000, headers=good)[0] == 414
    assert fetch(port, "GET", "/api/status", headers=good)[0] == 200


def test_the_web_setting_turns_the_page_on_at_the_next_start(procs: Procs) -> None:
    a = procs.daemon("a")
    assert "web page" not in a.ready_line
    bad = a.cli("config", "web_password", '"short"', check=False)
    assert bad.returncode == 2 and "8 to 256" in bad.stderr
    a.cli("config", "web", '"127.0.0.1:0"')
    a.restart()
    assert fetch(web_port(a), "GET", "/")[0] == 200


# -- Chromium -------------------------------------------------------------------------


def _chromium() -> str | None:
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


# The browser reads commands on descriptor 3 and answers on 4: a tiny launcher puts
# the pipe ends there (moved above 9 first, so that neither clobbers the other).
_PLACE_FDS = """
import fcntl, os, sys
r, w = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3])
os.dup2(r, 3)
os.dup2(w, 4)
os.closerange(5, 10)
os.close(r)
os.close(w)
os.execv(sys.argv[3], sys.argv[3:])
"""


class DevTools:
    """Chromium driven over ``--remote-debugging-pipe``."""

    def __init__(self, binary: str, profile: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--hide-scrollbars", f"--user-data-dir={profile}", "--remote-debugging-pipe",
                "about:blank"]
        self.proc = subprocess.Popen([sys.executable, "-c", _PLACE_FDS, str(cmd_r), str(out_w),
                                      *args], pass_fds=(cmd_r, out_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(out_w)
        self._buffer = b""
        self._next_id = 0

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise AssertionError(f"{method}: {reply['error']}")
                    return dict(reply.get("result", {}))
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise AssertionError(f"Chromium did not answer {method} in {timeout:g} s")
            data = os.read(self._out_r, 1 << 20)
            if not data:
                raise AssertionError(f"Chromium exited ({self.proc.poll()}) during {method}")
            self._buffer += data

    def close(self) -> None:
        try:
            os.write(self._cmd_w, json.dumps({"id": 0, "method": "Browser.close"}).encode()
                     + b"\0")
        except OSError:
            pass
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._out_r)


@pytest.mark.once
def test_chromium_loads_the_page_clicks_and_sees_a_code_and_qr(procs: Procs,
                                                               tmp_path: Path) -> None:
    binary = _chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    a = procs.daemon("a", "--web", "127.0.0.1:0")
    share = procs.root / "Piano recordings"
    share.mkdir()
    (share / "take01.wav").write_bytes(os.urandom(1000))
    # a hostile file name that the page lists as a problem (symlinks are not followed)
    hostile = "<img src=x onerror=window.__pwned=1>.wav"
    (share / hostile).symlink_to("/etc/hostname")
    a.cli("share", share, "--json")
    url = f"http://127.0.0.1:{web_port(a)}/"

    profile = Path(tempfile.mkdtemp(prefix="csweb-chromium-"))
    browser = DevTools(binary, profile)
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": 900, "height": 1300, "deviceScaleFactor": 1, "mobile": False},
                     session)
        browser.call("Page.navigate", {"url": url}, session)

        def evaluate(expression: str) -> Any:
            result = browser.call("Runtime.evaluate", {"expression": expression,
                                                       "returnByValue": True}, session)
            return result.get("result", {}).get("value")

        wait_for(lambda: evaluate(
            "document.querySelector('#shares tbody')?.textContent || ''") and str(share) in
            evaluate("document.querySelector('#shares tbody').textContent"),
            "the page to list the share")
        wait_for(lambda: evaluate("!document.getElementById('issue-code').disabled"),
                 "the button to be enabled")
        wait_for(lambda: "symbolic link not followed" in evaluate(
            "document.getElementById('problems').textContent"), "the problem to be listed")
        # the name is shown as text, never parsed as HTML
        assert hostile in evaluate("document.getElementById('problems').textContent")
        assert evaluate("document.querySelectorAll('#problems img').length") == 0
        assert evaluate("window.__pwned === undefined")
        evaluate("document.getElementById('issue-code').click()")
        code = wait_for(lambda: evaluate(
            "document.getElementById('code-result').hidden ? '' : "
            "document.getElementById('code-text').textContent"), "a code on the page")
        assert CODE.fullmatch(code), code
        wait_for(lambda: evaluate("document.getElementById('code-qr').complete && "
                                  "document.getElementById('code-qr').naturalWidth > 100"),
                 "the QR image to load")
        shot = base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"},
                                             session)["data"])
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)
    assert shot.startswith(b"\x89PNG") and len(shot) > 5000
    out_dir = Path(os.environ.get("CSEMBED_ARTIFACTS") or tmp_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "web-page.png"
    out.write_bytes(shot)
    print(f"screenshot of the web page: {out}")
    # the code the browser shows is one the daemon issued: it is in its code table
    assert code in (a.data / "codes.json").read_text()
