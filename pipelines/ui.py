"""``gongshu ui``: the Dagster UI on the instance and data of ``gongshu run``, with what its actions need.

Everything a user can click must succeed on the demo (re-execute a run, materialise or backfill a
partition), so beside ``dagster dev`` this starts, for as long as the UI runs:

* the departments' demo API (:mod:`pipelines.demo_api`) on ``--api-port``, and sets each API channel's
  URL variable that is not set already (``GONGSHU_API_ZRZY_URL`` in the demo) for the code location;
  ``--no-demo-api`` for a deployment whose departments run their own;
* a static server of the pages under ``$GONGSHU_HOME`` that runs link to — GX Data Docs (``gx_docs/``)
  and the departments' reports (``reports/``), nothing else of the home folder (the warehouse, the
  demo key, the outbox stay private) — on ``--docs-port``, the address ``GONGSHU_DOCS_URL`` names.

``dagster dev`` runs in ``$DAGSTER_HOME`` (which ``gongshu instance`` has just written): started in the
checkout, it warned that the repository's dagster.yaml "will not be used", though ``gongshu instance``
copies it there.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Mapping
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

from catalog.loader import Catalogue
from catalog.models import ApiChannel

PAGES = ("gx_docs", "reports")  # the only folders of GONGSHU_HOME served


def api_variables(catalogue: Catalogue, base: str, environ: Mapping[str, str]) -> dict[str, str]:
    """``{url_env: URL on the demo API}`` for every API channel whose variable is not set in ``environ``."""
    out = {}
    for r in catalogue.resources:
        ch = r.channel
        if isinstance(ch, ApiChannel) and ch.url_env and not environ.get(ch.url_env):
            out[ch.url_env] = base.rstrip("/") + urlparse(ch.url).path
    return out


class _PagesHandler(SimpleHTTPRequestHandler):
    """Files under the home folder's page folders only; everything else is 404."""

    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        # judged on the path the handler would open (decoded, normalised, symbolic links followed), so
        # neither ../ nor %2e%2e nor a link leads out of the page folders
        target = Path(self.translate_path(self.path)).resolve()
        root = Path(self.directory).resolve()
        if not any(target == root / p or target.is_relative_to(root / p) for p in PAGES):
            self.send_error(404, "not found")
            return None
        return super().send_head()

    def guess_type(self, path):
        kind = super().guess_type(path)
        return f"{kind}; charset=utf-8" if kind in ("text/html", "text/css", "application/javascript",
                                                    "text/javascript") else kind


def serve_pages(home: Path, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``home``'s page folders (:data:`PAGES`) over HTTP from a daemon thread."""
    server = ThreadingHTTPServer((host, port), partial(_PagesHandler, directory=str(home)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def dagster_dev(workspace: Path, dagster_home: Path, host: str, port: int, environ: Mapping[str, str]) -> int:
    """Run ``dagster dev`` (webserver and daemon) in ``dagster_home`` until it stops; its exit code."""
    command = [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(workspace), "-h", host, "-p", str(port)]
    process = subprocess.Popen(command, cwd=dagster_home, env=dict(environ))
    try:
        return process.wait()
    except KeyboardInterrupt:  # dagster dev got the Ctrl-C too and shuts its processes down
        return process.wait()
