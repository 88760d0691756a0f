"""The hard-OoD review page (data curation for W-OoD, Sec. 4.3.1's manual pruning), served by `weakseg ood review`.

A local stdlib HTTP server shows the mined candidates as a thumbnail grid. The reviewer marks each image
"keep" (no foreground object: a hard OoD) or "reject" (contains a class) by click or key, and can undo; every
decision and undo is written to the review file atomically before the page is answered (weakseg.ood.decisions),
so closing the page or killing the server loses nothing and a new `review` resumes. The page sends decisions
one at a time, in click order. POSTs carry a per-server token, so other web pages cannot write decisions.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from PIL import Image

from weakseg.errors import WeaksegError
from weakseg.ood.decisions import KEEP, REJECT, ReviewLog
from weakseg.ood.pool import find_image, read_truth

MAX_BODY = 4096
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>weakseg: hard-OoD review</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 0; background: #f4f2ee; color: #222; }
 header { position: sticky; top: 0; background: #fff; padding: 10px 16px; border-bottom: 1px solid #ccc; z-index: 2; }
 #bar { height: 8px; background: #ddd; border-radius: 4px; margin-top: 6px; }
 #fill { height: 8px; background: #3a7; border-radius: 4px; width: 0; }
 .keys { color: #555; margin-top: 4px; } kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 4px; background: #fafafa; }
 #grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; padding: 16px; }
 .tile { background: #fff; border: 3px solid #ccc; border-radius: 6px; padding: 6px; text-align: center; }
 .tile img { width: 156px; height: 156px; object-fit: contain; background: #eee; display: block; margin: 0 auto; }
 .tile.keep { border-color: #3a7; } .tile.reject { border-color: #c44; opacity: .75; }
 .tile.focus { outline: 4px solid #36c; outline-offset: 2px; }
 .meta { font-size: 12px; margin: 4px 0; } .state { font-weight: bold; }
 button { margin: 0 2px; cursor: pointer; }
 #status.error { color: #c00; font-weight: bold; }
</style></head>
<body data-ready="0" data-busy="0">
<header>
 <div><b>Hard-OoD review</b> &middot; <span id="progress">loading</span> &middot; <span id="status"></span></div>
 <div id="bar"><div id="fill"></div></div>
 <div class="keys"><kbd>K</kbd> keep: no foreground object (hard OoD) &middot; <kbd>R</kbd> reject: contains a class &middot;
  <kbd>U</kbd> / <kbd>Backspace</kbd> undo &middot; <kbd>&larr;</kbd> <kbd>&rarr;</kbd> <kbd>&uarr;</kbd> <kbd>&darr;</kbd> move</div>
</header>
<div id="grid"></div>
<script>
"use strict";
const TOKEN = "__TOKEN__";
let cands = [], decided = {}, focus = 0, queue = Promise.resolve(), busy = 0;
const grid = document.getElementById("grid");

function tileOf(i) { return grid.children[i]; }
function setBusy(d) { busy += d; document.body.dataset.busy = String(busy); }
function render(state) {
  decided = state.decisions;
  const s = state.summary;
  const r = s.positive_rate === null ? "-" : s.positive_rate.toFixed(2);
  document.getElementById("progress").textContent =
    `${s.decided} / ${s.candidates} decided · kept ${s.kept} · rejected ${s.rejected} · positive rate r = ${r}`;
  document.getElementById("fill").style.width = (s.candidates ? 100 * s.decided / s.candidates : 0) + "%";
  cands.forEach((c, i) => {
    const t = tileOf(i), d = decided[c.image] || "pending";
    t.classList.remove("keep", "reject", "pending"); t.classList.add(d);
    t.querySelector(".state").textContent = d;
  });
}
function setFocus(i) {
  if (!cands.length) return;
  focus = Math.max(0, Math.min(cands.length - 1, i));
  grid.querySelectorAll(".focus").forEach(t => t.classList.remove("focus"));
  const t = tileOf(focus); t.classList.add("focus"); t.scrollIntoView({block: "nearest"});
}
function nextPending(from) {
  for (let k = 1; k <= cands.length; k++) {
    const i = (from + k) % cands.length;
    if (!decided[cands[i].image]) return i;
  }
  return from;
}
function post(path, body) {  // serialised: the file records decisions in click order
  setBusy(1);
  queue = queue.then(() => fetch(path, {method: "POST", headers: {"Content-Type": "application/json", "X-Review-Token": TOKEN},
                                        body: JSON.stringify(body || {})}))
    .then(r => r.json().then(j => { if (!r.ok) throw new Error(j.error || r.statusText); return j; }))
    .then(state => { render(state); if (state.undone) setFocus(cands.findIndex(c => c.image === state.undone));
                     const st = document.getElementById("status"); st.textContent = "saved"; st.className = ""; })
    .catch(e => { const st = document.getElementById("status"); st.textContent = "error: " + e.message; st.className = "error"; })
    .finally(() => setBusy(-1));
  return queue;
}
function decide(i, decision) {
  decided[cands[i].image] = decision;  // optimistic, so focus skips it at once
  post("/api/decide", {image: cands[i].image, decision: decision});
  setFocus(nextPending(i));
}
function undo() { post("/api/undo", null); }
function columns() {
  const w = tileOf(0) ? tileOf(0).getBoundingClientRect().width + 10 : 180;
  return Math.max(1, Math.floor((grid.clientWidth - 22) / w));
}
document.addEventListener("keydown", e => {
  if (!cands.length || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key;
  if (k === "k" || k === "K") decide(focus, "keep");
  else if (k === "r" || k === "R") decide(focus, "reject");
  else if (k === "u" || k === "U" || k === "Backspace") undo();
  else if (k === "ArrowRight") setFocus(focus + 1);
  else if (k === "ArrowLeft") setFocus(focus - 1);
  else if (k === "ArrowDown") setFocus(focus + columns());
  else if (k === "ArrowUp") setFocus(focus - columns());
  else return;
  e.preventDefault();
});
fetch("/api/state").then(r => r.json()).then(state => {
  cands = state.candidates;
  cands.forEach((c, i) => {
    const t = document.createElement("div");
    t.className = "tile pending"; t.id = "tile-" + c.image; t.dataset.image = c.image;
    t.innerHTML = `<img loading="lazy" alt="">` +
      `<div class="meta"><span class="rank"></span> <span class="cls"></span> <span class="score"></span></div>` +
      `<div class="meta state">pending</div><button class="keep-btn">keep</button><button class="reject-btn">reject</button>`;
    t.querySelector("img").src = "/thumb/" + encodeURIComponent(c.image);
    t.querySelector(".rank").textContent = "#" + (i + 1);
    t.querySelector(".cls").textContent = c.cls;
    t.querySelector(".score").textContent = "p=" + c.score.toFixed(3);
    t.querySelector(".keep-btn").id = "keep-" + c.image;
    t.querySelector(".reject-btn").id = "reject-" + c.image;
    t.querySelector(".keep-btn").addEventListener("click", ev => { ev.stopPropagation(); decide(i, "keep"); });
    t.querySelector(".reject-btn").addEventListener("click", ev => { ev.stopPropagation(); decide(i, "reject"); });
    t.addEventListener("click", () => setFocus(i));
    grid.appendChild(t);
  });
  render(state);
  setFocus(state.summary.decided < cands.length ? nextPending(-1 + cands.length) : 0);
  document.body.dataset.ready = "1";
});
</script></body></html>
"""


class ReviewServer:
    """The review page and its JSON API over one ReviewLog, on host:port (port 0 picks a free one)."""

    def __init__(self, log: ReviewLog, host: str = "127.0.0.1", port: int = 0, thumb_px: int = 160) -> None:
        self.log, self.thumb_px = log, thumb_px
        self.lock = threading.Lock()
        self.token = secrets.token_hex(16)
        self.images_dir = Path(log.meta["images_dir"])
        self._thumbs: dict[str, bytes] = {}
        try:
            self.httpd = ThreadingHTTPServer((host, port), self._handler())
        except OSError as e:
            raise WeaksegError(f"cannot serve the review page on {host}:{port} ({e})") from e
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """http://host:port/ of the page."""
        host = self.httpd.server_address[0]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{self.httpd.server_port}/"

    def start(self) -> ReviewServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ood-review", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until shutdown() or KeyboardInterrupt."""
        self.httpd.serve_forever()

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def state(self, undone: str | None = None) -> dict:
        """Candidates, decisions and the running summary."""
        return {
            "candidates": [{"image": c.image, "cls": c.cls, "score": c.score} for c in self.log.candidates],
            "decisions": {d.image: d.decision for d in self.log.decisions},
            "summary": self.log.summary().to_json(),
            "undone": undone,
        }

    def thumbnail(self, image_id: str) -> bytes | None:
        """A JPEG thumbnail of a candidate (None for an unknown id)."""
        if image_id not in self.log.by_image or not _ID.match(image_id):
            return None
        if image_id not in self._thumbs:
            with Image.open(find_image(self.images_dir, image_id)) as src:
                im = src.convert("RGB")
                im.thumbnail((self.thumb_px, self.thumb_px))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=85)
            self._thumbs[image_id] = buf.getvalue()
        return self._thumbs[image_id]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: object) -> None:  # quiet: the CLI prints what matters
                pass

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, obj: dict) -> None:
                self._send(status, json.dumps(obj).encode(), "application/json")

            def do_GET(self) -> None:
                if self.path == "/":
                    self._send(
                        HTTPStatus.OK, PAGE.replace("__TOKEN__", server.token).encode(), "text/html; charset=utf-8"
                    )
                elif self.path == "/api/state":
                    with server.lock:
                        self._json(HTTPStatus.OK, server.state())
                elif self.path.startswith("/thumb/"):
                    data = server.thumbnail(unquote(self.path[len("/thumb/") :]))
                    if data is None:
                        self._json(HTTPStatus.NOT_FOUND, {"error": "unknown candidate"})
                    else:
                        self._send(HTTPStatus.OK, data, "image/jpeg")
                elif self.path == "/favicon.ico":
                    self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

            def do_POST(self) -> None:
                if self.headers.get("X-Review-Token") != server.token:
                    return self._json(HTTPStatus.FORBIDDEN, {"error": "missing or wrong review token"})
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    if length > MAX_BODY:
                        raise ValueError("request too large")
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError as e:
                    return self._json(HTTPStatus.BAD_REQUEST, {"error": f"bad request: {e}"})
                with server.lock:
                    try:
                        if self.path == "/api/decide":
                            server.log.decide(str(body.get("image")), str(body.get("decision")), by="human")
                            return self._json(HTTPStatus.OK, server.state())
                        if self.path == "/api/undo":
                            last = server.log.undo()
                            return self._json(HTTPStatus.OK, server.state(last.image if last else None))
                    except WeaksegError as e:
                        return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        return Handler


def oracle_review(log: ReviewLog, truth_path: str | Path | None = None) -> int:
    """Decide every pending candidate from the benchmark's truth.csv (keep = no foreground); return how many."""
    path = Path(truth_path) if truth_path else Path(log.meta["pool"]) / "truth.csv"
    truth = read_truth(path)
    pending = log.pending()
    missing = next((c.image for c in pending if c.image not in truth), None)
    if missing is not None:
        raise WeaksegError(f"{path}: no truth entry for candidate {missing!r}")
    for c in pending:
        log.decide(c.image, REJECT if truth[c.image] else KEEP, by="oracle", save=False)
    log.save()
    return len(pending)


def accept_all(log: ReviewLog) -> int:
    """Keep every pending candidate without looking (no human check, no label cost); return how many."""
    pending = log.pending()
    for c in pending:
        log.decide(c.image, KEEP, by="accept-all", save=False)
    log.save()
    return len(pending)
