"""GX Data Docs pages that open without the internet: local copies of the CDN files they load.

Great Expectations 1.x renders a page with ``<link>``/``<script>`` tags pointing at CDNs (Bootstrap,
Bootstrap Table, FontAwesome, jQuery, Popper, Vega; ``great_expectations/render/view/templates``). A
data bureau's network is often closed, so such a page renders unstyled. The files ship with gongshu
(``quality/gx_static``, versions and licences in its README); :func:`install_static` copies them next to
the pages once and :func:`localise` points a page's links at them by a relative path, which works
over HTTP (``make ui`` serves ``$GONGSHU_HOME``) and from the file system alike.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent / "gx_static"
STATIC = "_static"  # the folder beside the pages' folders: <docs>/_static

CDN: dict[str, str] = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/bootstrap.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-dark/bootstrap-prefers-dark.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table/bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker/bootstrap-datepicker.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome/css/all.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper/popper.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega/vega-embed.min.js",
}
GX_IMAGES = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"  # the navbar's logo
_TAGS = r"<(?:script|link|img)\b[^>]*>"
_FAVICON = re.compile(r"""href=(["'])(?:\.\./)*static/images/([\w.-]+)\1""")
_LINK = re.compile(r"""(?P<attr>\b(?:src|href))=(?P<q>["'])(?P<url>https?://[^"']+)(?P=q)""")
_SRI = re.compile(r"""\s+(?:integrity|crossorigin)=(["'])[^"']*\1""")


def external_assets(html: str) -> list[str]:
    """The scripts, stylesheets and images a page still loads from another host (no local copy)."""
    out = []
    for tag in re.findall(_TAGS, html):
        out += [m.group("url") for m in _LINK.finditer(tag)]
    return out


def localise(html: str, prefix: str) -> str:
    """``html`` with every known CDN link replaced by ``prefix`` + its local copy (``prefix``: the
    relative path from the page to the static folder, e.g. ``../_static/``). Subresource-integrity
    attributes are dropped with the links they guarded. GX's logo and favicon point at the copies of
    GX's own images (``<static>/images``)."""
    def local(url: str) -> str | None:
        if url in CDN:
            return prefix + CDN[url]
        if url.startswith(GX_IMAGES):
            return prefix + "images/" + url.removeprefix(GX_IMAGES).split("?")[0]
        return None

    def tag(m: re.Match[str]) -> str:
        text = _FAVICON.sub(lambda x: f"href={x.group(1)}{prefix}images/{x.group(2)}{x.group(1)}", m.group(0))
        if not any(local(x.group("url")) for x in _LINK.finditer(text)):
            return text
        text = _LINK.sub(lambda x: f"{x.group('attr')}={x.group('q')}{local(x.group('url'))}{x.group('q')}"
                         if local(x.group("url")) else x.group(0), text)
        return _SRI.sub("", text)

    return re.sub(_TAGS, tag, html)


def gx_images() -> Path:
    """GX's own images (logo, favicon), which its pages link on a web host."""
    import great_expectations

    return Path(great_expectations.__file__).resolve().parent / "render" / "view" / "static" / "images"


def _stamp() -> str:
    h = hashlib.sha256()
    for root in (SHIPPED, gx_images()):
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(f"{p.relative_to(root).as_posix()}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def install_static(folder: Path) -> Path:
    """Copy the shipped files to ``folder`` (``<docs>/_static``) unless the same set is there already.

    Parallel step processes may get here at once: each copies to a temporary folder and renames it
    into place; a process that finds the folder in place by then leaves it."""
    stamp = folder / ".stamp"
    expected = _stamp()
    if stamp.exists() and stamp.read_text(encoding="utf-8") == expected:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".static-", dir=folder.parent))
    shutil.copytree(SHIPPED, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("README.md"))
    shutil.copytree(gx_images(), tmp / "images", dirs_exist_ok=True)
    (tmp / ".stamp").write_text(expected, encoding="utf-8")
    old = folder.parent / f".old-{os.getpid()}"
    try:
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    except OSError:  # another process put its copy in place first
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def localised_page(html: str, page: Path, static: Path) -> str:
    """A page's HTML with its CDN links pointing at ``static`` (installed there if needed)."""
    install_static(static)
    prefix = Path(os.path.relpath(static, page.parent)).as_posix() + "/"
    return localise(html, prefix)
