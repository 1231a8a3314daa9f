"""The page itself: one HTML document, its style sheet and its script.

Theory of operation
-------------------
The HTML is a static skeleton; the only value put into it is the CSRF token
(hex, but escaped anyway), in a ``<meta>`` tag the script reads. The script
polls ``/api/status`` every two seconds and rebuilds the tables from the
JSON; it writes every daemon-supplied string through ``textContent`` -- file
names and device names come from peers and are hostile -- never as HTML.
The "issue an access code" button POSTs ``/api/code`` with the token in
``X-CSRF-Token`` and shows the code, its URL and a QR image. Scripts and
styles are separate files so the Content-Security-Policy can forbid inline
code.
"""

from __future__ import annotations

import html
from typing import Final

__all__ = ["APP_JS", "STYLE_CSS", "render_page"]

_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{token}">
<title>csembed</title>
<link rel="stylesheet" href="/style.css">
<script src="/app.js" defer></script>
</head>
<body>
<header><h1>csembed</h1><p id="daemon">connecting to the daemon&hellip;</p></header>
<main>
<section>
<h2>Shares</h2>
<table id="shares"><thead><tr><th>Folder</th><th>Status</th><th>Access</th><th>Peers</th>
<th>To sync</th></tr></thead><tbody></tbody></table>
<p id="no-shares" class="hint" hidden>No shares yet: run <code>csembed share FOLDER</code>.</p>
</section>
<section id="invite">
<h2>Invite a device</h2>
<form id="code-form">
<label>Share <select id="code-share"></select></label>
<label>Access <select id="code-mode"><option value="read_write">read-write</option>
<option value="read_only">read-only</option></select></label>
<button type="submit" id="issue-code">Issue access code</button>
</form>
<div id="code-result" hidden>
<p>Access code (one use, valid for 24 hours):</p>
<p><code id="code-text"></code></p>
<img id="code-qr" alt="QR code of the access code" width="240" height="240">
<p class="hint">On the other device: <code>csembed attach CODE FOLDER</code>,
or scan the QR code.</p>
</div>
<p id="code-error" class="problem" hidden></p>
</section>
<section>
<h2>Problems</h2>
<ul id="problems"></ul>
<p id="no-problems" class="hint">None.</p>
</section>
<section>
<h2>Transfers</h2>
<table id="transfers"><thead><tr><th>File</th><th>Progress</th><th>Size</th></tr></thead>
<tbody></tbody></table>
<p id="no-transfers" class="hint">No transfers in progress.</p>
</section>
<section>
<h2>Peers</h2>
<table id="peers"><thead><tr><th>Device</th><th>State</th><th>Address</th><th>Share</th>
</tr></thead><tbody></tbody></table>
<p id="no-peers" class="hint">No peers known yet.</p>
</section>
</main>
</body>
</html>
"""

STYLE_CSS: Final = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; background: #f6f6f4; }
header { background: #234; color: #fff; padding: 0.6em 1.2em; }
header h1 { margin: 0; font-size: 1.4em; }
header p { margin: 0.2em 0 0; font-size: 0.9em; opacity: 0.85; }
main { padding: 0.5em 1.2em 2em; max-width: 60em; }
section { background: #fff; border: 1px solid #ddd; border-radius: 6px;
          padding: 0.4em 1em 0.8em; margin-top: 1em; }
h2 { font-size: 1.1em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.25em 0.6em 0.25em 0; border-bottom: 1px solid #eee;
         font-size: 0.92em; overflow-wrap: anywhere; }
.status-synced { color: #176b2c; font-weight: bold; }
.status-syncing, .status-scanning, .status-attaching { color: #8a5a00; font-weight: bold; }
.status-error { color: #b00020; font-weight: bold; }
.problem { color: #b00020; }
.hint { color: #666; font-size: 0.9em; }
progress { width: 12em; }
label { margin-right: 1em; }
button { font-size: 1em; padding: 0.3em 0.9em; }
#code-text { font-size: 1.25em; letter-spacing: 0.05em; user-select: all; }
#code-qr { display: block; image-rendering: pixelated; border: 1px solid #ccc; }
"""

APP_JS: Final = r"""
"use strict";
const token = document.querySelector('meta[name="csrf-token"]').content;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function size(n) {
  n = Number(n) || 0;
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows);
  document.getElementById(id).hidden = rows.length === 0;
  document.getElementById("no-" + id).hidden = rows.length > 0;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) {
    tr.append(cell instanceof Node ? (() => { const td = el("td"); td.append(cell); return td; })()
              : el("td", cell));
  }
  return tr;
}

function render(data) {
  const st = data.status || {};
  document.getElementById("daemon").textContent =
    (st.paused ? "paused" : "running") + " \u00b7 " + (st.software || "csembed") +
    " \u00b7 board " + ((st.board || {}).name || "?") + " \u00b7 " +
    (st.connections || 0) + " connection(s) \u00b7 up " + size(st.upload_rate) + "/s, down " +
    size(st.download_rate) + "/s";
  const shares = st.shares || [];
  fill("shares", shares.map(s => {
    const word = el("span", s.status, "status-" + s.status);
    const todo = s.files_to_sync ? s.files_to_sync + " file(s), " + size(s.bytes_to_sync) : "";
    return row([s.path, word, String(s.access_level || "").replace("_", "-"),
                s.peers === undefined ? "" : s.peers, todo]);
  }));
  const problems = [];
  for (const s of shares) {
    if (s.reason) problems.push(s.path + ": " + s.reason);
    for (const m of s.missing || []) problems.push(s.path + ": " + m);
    for (const x of s.problems || []) {
      problems.push(s.path + (x.key || "") + ": " + (x.message || x.reason || x.kind || ""));
    }
  }
  const list = document.getElementById("problems");
  list.replaceChildren(...problems.slice(0, 50).map(p => el("li", p, "problem")));
  document.getElementById("no-problems").hidden = problems.length > 0;
  fill("transfers", (data.transfers || []).map(t => {
    const bar = el("progress");
    bar.max = Math.max(1, Number(t.total) || 0);
    bar.value = Number(t.done) || 0;
    const percent = Math.floor(100 * bar.value / bar.max);
    const who = t.peer_name || String(t.peer || "").slice(0, 8);
    const up = t.direction === "up";
    const name = (up ? "\u2191 " : "\u2193 ") + (t.share || "") + t.key;
    return row([up ? name + " \u2192 " + who : name, bar,
                size(t.done) + " / " + size(t.total) + " (" + percent + "%)"]);
  }));
  fill("peers", (data.peers || []).map(p =>
    row([(p.name || "") + " " + String(p.peer_id || "?").slice(0, 12), p.state || "",
         p.address || (p.addresses || []).join(", "), p.share || p.attaching || ""])));
  const select = document.getElementById("code-share");
  const writable = shares.filter(s => s.status !== "attaching" && s.access_level);
  const chosen = select.value;
  const paths = writable.map(s => s.path);
  if (paths.join("\n") !== Array.from(select.options).map(o => o.value).join("\n")) {
    select.replaceChildren(...paths.map(p => {
      const o = el("option", p); o.value = p; return o;
    }));
    if (paths.includes(chosen)) select.value = chosen;
  }
  document.getElementById("issue-code").disabled = paths.length === 0;
}

async function poll() {
  try {
    const reply = await fetch("/api/status", {cache: "no-store"});
    if (reply.ok) render(await reply.json());
    else document.getElementById("daemon").textContent = "daemon answered " + reply.status;
  } catch (e) {
    document.getElementById("daemon").textContent = "cannot reach the daemon";
  }
}

async function issue(event) {
  event.preventDefault();
  const error = document.getElementById("code-error");
  error.hidden = true;
  const body = {path: document.getElementById("code-share").value,
                mode: document.getElementById("code-mode").value};
  const reply = await fetch("/api/code", {method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-CSRF-Token": token}});
  const data = await reply.json();
  if (!reply.ok) {
    error.textContent = "could not issue a code: " + (data.message || reply.status);
    error.hidden = false;
    return;
  }
  document.getElementById("code-text").textContent = data.access_code;
  const qr = document.getElementById("code-qr");
  if (String(data.qr).startsWith("data:image/svg+xml")) qr.src = data.qr;
  document.getElementById("code-result").hidden = false;
}

document.getElementById("code-form").addEventListener("submit", issue);
poll();
setInterval(poll, 2000);
"""


def render_page(csrf_token: str) -> str:
    """The HTML page with ``csrf_token`` embedded."""
    return _PAGE.format(token=html.escape(csrf_token, quote=True))
