"""The arena's web server (stdlib `http.server`: no extra dependency, one static page + a
two-call JSON API). Nothing served ever contains a model name: the page shows "Left" and
"Right", and the API speaks in opaque per-pair tokens that only the database can resolve.
Only invited annotators (`python -m lmforge.eval.arena add-annotator`) get pairs or vote; they
authenticate with their invite token."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

from lmforge.eval.arena.store import ArenaStore

log = logging.getLogger(__name__)
MAX_BODY = 16_384

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
#prompt{white-space:pre-wrap;background:#f4f4f4;padding:1em;border-radius:6px}
.cols{display:flex;gap:1em;margin:1em 0}.col{flex:1;border:1px solid #ccc;border-radius:6px;padding:1em}
.col pre{white-space:pre-wrap;font-family:inherit;margin:0}
button{font-size:1em;padding:.5em 1em;margin-right:.5em;cursor:pointer}
"""

# The invite token arrives once as ?invite=... (the link `add-annotator` prints), moves to
# localStorage, and leaves the address bar; the API gets it in the Authorization header.
SCRIPT = """
let token = null;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
if (params.get("invite")) {
  localStorage.setItem("invite", params.get("invite"));
  history.replaceState(null, "", location.pathname);
}
$("invite").value = localStorage.getItem("invite") || "";
const auth = () => ({"Authorization": "Bearer " + $("invite").value.trim()});
async function next() {
  if (!$("invite").value.trim()) { $("status").textContent = "Enter your invite token to start."; return; }
  localStorage.setItem("invite", $("invite").value.trim());
  const r = await fetch("/api/next", {headers: auth()});
  const data = await r.json();
  if (!r.ok) { $("task").hidden = true; token = null; $("status").textContent = data.error; return; }
  if (data.done) { $("task").hidden = true; token = null; $("status").textContent = "All pairs judged. Thank you!"; return; }
  token = data.token;
  $("prompt").textContent = data.prompt; $("left").textContent = data.left; $("right").textContent = data.right;
  $("task").hidden = false; $("status").textContent = "";
}
async function vote(choice) {
  if (!token) return;
  const body = JSON.stringify({token: token, choice: choice});
  token = null;
  const r = await fetch("/api/vote", {method: "POST", headers: {...auth(), "Content-Type": "application/json"}, body: body});
  if (!r.ok) { $("status").textContent = "Vote failed: " + (await r.json()).error; }
  await next();
}
document.querySelectorAll("button[data-choice]").forEach((b) => b.addEventListener("click", () => vote(b.dataset.choice)));
$("invite").addEventListener("change", next);
next();
"""

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Side-by-side evaluation</title>
<style>{STYLE}</style></head><body>
<h1>Which response is better?</h1>
<p><label>Invite token <input id="invite" type="password" autocomplete="off"></label>
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
<script>{SCRIPT}</script></body></html>
"""


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# Only this page's own inline script and style run; it talks to its own origin only, cannot be
# framed, and sends no Referer (the invite link carries a token).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class BodyError(ValueError):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def make_handler(store: ArenaStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "arena"
        sys_version = ""

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: dict) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _annotator(self) -> str | None:
            """The invited annotator of this request's bearer token; answers 401 when none."""
            given = self.headers.get("Authorization", "")
            annotator = (
                store.annotator_for(given.removeprefix("Bearer ").strip()) if given.startswith("Bearer ") else None
            )
            if annotator is None:
                self._json(HTTPStatus.UNAUTHORIZED, {"error": "unknown invite token: ask the organiser for yours"})
            return annotator

        def _body(self) -> bytes:
            """The request body, at most MAX_BODY bytes, judged on what is actually read."""
            if self.headers.get("Transfer-Encoding"):
                raise BodyError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
            declared = self.headers.get("Content-Length", "")
            if not declared.isdigit():  # absent, negative (-1 read to EOF before) or garbage
                raise BodyError(HTTPStatus.LENGTH_REQUIRED, "Content-Length must be a non-negative integer")
            if int(declared) > MAX_BODY:
                raise BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
            body = self.rfile.read(int(declared))
            if len(body) != int(declared):
                raise BodyError(HTTPStatus.BAD_REQUEST, "body shorter than its Content-Length")
            return body

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            if url.path == "/":
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            elif url.path == "/api/next":
                annotator = self._annotator()
                if annotator is not None:
                    pair = store.next_pair(annotator)
                    self._json(HTTPStatus.OK, pair if pair else {"done": True})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            if urlparse(self.path).path != "/api/vote":
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            try:
                raw = self._body()
            except BodyError as err:
                self.close_connection = True  # an unread body must not be parsed as the next request
                self._json(err.status, {"error": str(err)})
                return
            annotator = self._annotator()
            if annotator is None:
                return
            try:
                body = json.loads(raw)
                store.record_vote(str(body["token"]), str(body["choice"]), annotator)
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
