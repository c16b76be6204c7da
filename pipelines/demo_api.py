"""A department's paged JSON API (数据接口), served from generated files for the demo and tests.

``GET /<path>?date=YYYY-MM-DD&page=N&page_size=M`` answers
``{"page", "page_size", "total", "total_pages", "items"}`` from ``<landing>/api/<path>/<YYYYMMDD>.json``;
404 when nothing was delivered that day. Real departments run their own; this stands in for them
only where no department exists (``make demo``, tests).
"""

from __future__ import annotations

import json
import math
import threading
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse


@lru_cache(maxsize=32)
def _load(path: Path, mtime: float) -> list:
    return json.loads(path.read_text(encoding="utf-8"))


def make_server(landing: Path, host: str = "127.0.0.1", port: int = 8765, token: str | None = None) -> ThreadingHTTPServer:
    root = (landing / "api").resolve()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep request lines (with dates) out of the logs
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if token and self.headers.get("Authorization") != f"Bearer {token}":
                self._send(401, {"error": "unauthorized"})
                return
            url = urlparse(self.path)
            q = parse_qs(url.query)
            try:
                day = q.get("date", [""])[0].replace("-", "")
                page = int(q.get("page", ["1"])[0])
                size = int(q.get("page_size", ["1000"])[0])
            except ValueError:
                self._send(400, {"error": "bad parameters"})
                return
            path = (root / url.path.strip("/") / f"{day}.json").resolve()
            if root not in path.parents or not path.is_file() or page < 1 or size < 1:
                self._send(404, {"error": "not found"})
                return
            items = _load(path, path.stat().st_mtime)
            total_pages = max(1, math.ceil(len(items) / size))
            self._send(200, {
                "page": page, "page_size": size, "total": len(items), "total_pages": total_pages,
                "items": items[(page - 1) * size: page * size],
            })

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(landing: Path, host: str = "127.0.0.1", port: int = 0, token: str | None = None):
    """Start the server in a daemon thread; returns (server, base_url). Call server.shutdown()."""
    server = make_server(landing, host, port, token)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"
