"""Dagster resources: the warehouse and the landing area, configured from environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from warehouse.store import Warehouse, default_url

DEFAULT_LANDING = Path(".gongshu/landing")


def open_warehouse(url: str | None = None) -> Warehouse:
    """The warehouse at ``url`` (default: ``GONGSHU_WAREHOUSE_URL`` or the SQLite default), a
    warehouse written by an earlier version brought up to date first. Every entry point (the
    Dagster resource, the ``gongshu`` commands) opens the warehouse through here."""
    from assets.base import upgrade_warehouse

    wh = Warehouse(url or default_url())
    upgrade_warehouse(wh)
    return wh


def landing_path() -> Path:
    """``GONGSHU_LANDING``: root of the file deliveries (and the demo's 前置库 files)."""
    return Path(os.environ.get("GONGSHU_LANDING") or DEFAULT_LANDING)


class WarehouseResource(ConfigurableResource):
    """The warehouse every asset writes through (SQLAlchemy URL; SQLite or PostgreSQL)."""

    url: str | None = None
    _wh: Warehouse | None = PrivateAttr(default=None)

    def get(self) -> Warehouse:
        if self._wh is None:
            self._wh = open_warehouse(self.url)
        return self._wh

    def teardown_after_execution(self, context) -> None:
        if self._wh is not None:
            self._wh.dispose()


class LandingResource(ConfigurableResource):
    """Where departments' files land (前置机 folders)."""

    path: str | None = None

    def root(self) -> Path:
        return Path(self.path) if self.path else landing_path()
