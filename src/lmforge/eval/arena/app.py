"""The arena's web server (stdlib `http.server`: no extra dependency, one static page + a
two-call JSON API). Nothing served ever contains a model name: the page shows "Left" and
"Right", and the API speaks in opaque per-pair tokens that only the database can resolve."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from lmforge.eval.arena.store import ArenaStore

log = logging.getLogger(__name__)
MAX_BODY = 16_384

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Side-by-side evaluation</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
#prompt{white-space:pre-wrap;background:#f4f4f4;padding:1em;border-radius:6px}
.cols{display:flex;gap:1em;margin:1em 0}.col{flex:1;border:1px solid #ccc;border-radius:6px;padding:1em}
.col pre{white-space:pre-wrap;font-family:inherit;margin:0}
button{font-size:1em;padding:.5em 1em;margin-right:.5em;cursor:pointer}
</style></head><body>
<h1>Which response is better?</h1>
<p><label>Annotator id <input id="annotator" autocomplete="off"></label>
<span id="status" role="status"></span></p>
<div id="task" hidden>
  <h2>Prompt</h2><div id="prompt"></div>
  <div class="cols">
    <div class="col"><h3>Left</h3><pre id="left"></pre></div>
    <div class="col"><h3>Right</h3><pre id="right"></pre></div>
  </div>
  <button data-choice="left">Left is better</button>
  <button data-choice="right">Right is better</button>
  <button data-choice="tie">Tie</button>
  <button data-choice="both_bad">Both are bad</button>
</div>
<script>
let token = null;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
$("annotator").value = params.get("annotator") || localStorage.getItem("annotator") || "";
async function next() {
  const who = $("annotator").value.trim();
  if (!who) { $("status").textContent = "Enter an annotator id to start."; return; }
  localStorage.setItem("annotator", who);
  const r = await fetch("/api/next?annotator=" + encodeURIComponent(who));
  const data = await r.json();
  if (data.done) { $("task").hidden = true; token = null; $("status").textContent = "All pairs judged. Thank you!"; return; }
  token = data.token;
  $("prompt").textContent = data.prompt; $("left").textContent = data.left; $("right").textContent = data.right;
  $("task").hidden = false; $("status").textContent = "";
}
async function vote(choice) {
  if (!token) return;
  const body = JSON.stringify({token: token, choice: choice, annotator: $("annotator").value.trim()});
  token = null;
  const r = await fetch("/api/vote", {method: "POST", headers: {"Content-Type": "application/json"}, body: body});
  if (!r.ok) { $("status").textContent = "Vote failed: " + (await r.text()); }
  await next();
}
document.querySelectorAll("button[data-choice]").forEach((b) => b.addEventListener("click", () => vote(b.dataset.choice)));
$("annotator").addEventListener("change", next);
next();
</script></body></html>
"""


def make_handler(store: ArenaStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "arena"
        sys_version = ""

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: dict) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            if url.path == "/":
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            elif url.path == "/api/next":
                annotator = (parse_qs(url.query).get("annotator") or [""])[0].strip()
                if not annotator:
                    self._json(HTTPStatus.BAD_REQUEST, {"error": "annotator id required"})
                    return
                pair = store.next_pair(annotator)
                self._json(HTTPStatus.OK, pair if pair else {"done": True})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            if urlparse(self.path).path != "/api/vote":
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
                return
            try:
                body = json.loads(self.rfile.read(length))
                store.record_vote(str(body["token"]), str(body["choice"]), str(body["annotator"]).strip())
            except (KeyError, ValueError, PermissionError, TypeError) as err:
                # Error texts are fixed strings from the store: they never name a model.
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(err).strip("'\"")})
                return
            self._json(HTTPStatus.OK, {"ok": True})

        def log_message(self, fmt: str, *args) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

    return Handler


def make_server(store: ArenaStore, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), make_handler(store))
