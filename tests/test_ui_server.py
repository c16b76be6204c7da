"""What ``gongshu ui`` starts beside Dagster: the pages server and the demo API's variables (pipelines/ui.py)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from catalog.loader import DEMO_CATALOGUE, load_catalogue
from pipelines.ui import api_variables, serve_pages


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_the_pages_server_serves_data_docs_and_reports_and_nothing_else_of_the_home_folder(tmp_path: Path) -> None:
    (tmp_path / "gx_docs" / "gaj_hjrk").mkdir(parents=True)
    (tmp_path / "gx_docs" / "gaj_hjrk" / "p.html").write_text("<p>校验</p>", encoding="utf-8")
    (tmp_path / "reports" / "2026-11-20").mkdir(parents=True)
    (tmp_path / "reports" / "2026-11-20" / "gaj.html").write_text("<p>市公安局</p>", encoding="utf-8")
    (tmp_path / "warehouse.db").write_bytes(b"SQLite format 3\0")
    (tmp_path / "demo-pseudonym.key").write_text("secret", encoding="utf-8")
    server = serve_pages(tmp_path, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert _get(f"{base}/gx_docs/gaj_hjrk/p.html") == (200, "<p>校验</p>")
        assert _get(f"{base}/reports/2026-11-20/gaj.html") == (200, "<p>市公安局</p>")
        for private in ("/warehouse.db", "/demo-pseudonym.key", "/", "/gx_docs/../demo-pseudonym.key",
                        "/reports/%2e%2e/demo-pseudonym.key", "/outbox/"):
            status, body = _get(base + private)
            assert status == 404 and "secret" not in body, private
    finally:
        server.shutdown()
        server.server_close()


def test_the_demo_api_url_is_set_for_every_api_channel_whose_variable_is_unset() -> None:
    demo = load_catalogue(DEMO_CATALOGUE)
    assert api_variables(demo, "http://127.0.0.1:8817", {}) == {
        "GONGSHU_API_ZRZY_URL": "http://127.0.0.1:8817/zrzy/bdcqz"}
    # a deployment's own address is left alone
    assert api_variables(demo, "http://127.0.0.1:8817", {"GONGSHU_API_ZRZY_URL": "https://zrzy.internal/api"}) == {}


@pytest.mark.parametrize("url", ["http://127.0.0.1:3001", "http://127.0.0.1:3001/"])
def test_pages_are_linked_over_http_under_the_home_folder(tmp_path: Path, url: str) -> None:
    from assets.resources import Settings

    settings = Settings(home=str(tmp_path), docs_url=url)
    page = tmp_path / "gx_docs" / "gaj_hjrk" / "gaj_hjrk.20261120.1.html"
    assert settings.page_url(page) == "http://127.0.0.1:3001/gx_docs/gaj_hjrk/gaj_hjrk.20261120.1.html"
    assert settings.page_url(tmp_path / "reports" / "2026-11-20" / "市公安局.html") == \
        "http://127.0.0.1:3001/reports/2026-11-20/%E5%B8%82%E5%85%AC%E5%AE%89%E5%B1%80.html"
    assert Settings(home=str(tmp_path), docs_url="file").page_url(page) == page.resolve().as_uri()
