"""Dagster resources: the warehouse and the landing area, configured from environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from desensitize.pseudonym import PseudonymKey
from quality.mail import Mailer
from warehouse.store import Warehouse
from warehouse.upgrade import open_warehouse

DEFAULT_LANDING = Path(".gongshu/landing")




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


class MailerResource(ConfigurableResource):
    """The Mailer as a Dagster resource (SMTP from ``GONGSHU_SMTP_*``, else the outbox folder)."""

    warehouse: WarehouseResource
    outbox: str | None = None
    _mailer: Mailer | None = PrivateAttr(default=None)

    def get(self) -> Mailer:
        if self._mailer is None:
            self._mailer = Mailer.from_env(self.warehouse.get(), Path(self.outbox) if self.outbox else None)
        return self._mailer


class PseudonymKeyResource(ConfigurableResource):
    """The pseudonymisation key, read from an environment variable only when an output needs it."""

    env_var: str = "GONGSHU_PSEUDONYM_KEY"
    algorithm_env_var: str = "GONGSHU_PSEUDONYM_ALG"

    def key(self) -> PseudonymKey:
        env = {"GONGSHU_PSEUDONYM_KEY": os.environ.get(self.env_var, ""),
               "GONGSHU_PSEUDONYM_ALG": os.environ.get(self.algorithm_env_var, "")}
        return PseudonymKey.from_env(env)

    def key_or_none(self) -> PseudonymKey | None:
        """The key, or None when the variable is unset (a set but unusable key still raises)."""
        if not os.environ.get(self.env_var):
            return None
        return self.key()


def open_data_root() -> Path:
    """``$GONGSHU_HOME/open`` (``.gongshu/open`` by default)."""
    return Path(os.environ.get("GONGSHU_HOME") or ".gongshu") / "open"


class OpenDataResource(ConfigurableResource):
    """Where open-data files are published."""

    path: str | None = None

    def root(self) -> Path:
        return Path(self.path) if self.path else open_data_root()


def share_resources() -> dict[str, ConfigurableResource]:
    return {"pseudonym": PseudonymKeyResource(), "open_data": OpenDataResource()}
