"""The scorecard configuration (``scorecard.yaml``): weights, thresholds and 校核 deadlines.

Every weight and threshold of the scorecard (quality.md «Scorecard») and the tickets' deadlines:
defaults below, overridden by a YAML file (``GONGSHU_SCORECARD_CONFIG``, else ``scorecard.yaml`` in
the catalogue folder) and then by ``GONGSHU_SCORECARD_<FIELD>`` environment variables for scalar
fields. Read by the tickets (deadlines), the scorecard (weights) and the reports (rows shown).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from quality.rules import Dimension, Severity

CONFIG_ENV = "GONGSHU_SCORECARD_CONFIG"
CONFIG_FILE = "scorecard.yaml"
ENV_PREFIX = "GONGSHU_SCORECARD_"


class ConfigError(ValueError):
    """The scorecard configuration is invalid (file, field and reason in the message)."""


class ScorecardConfig(BaseModel):
    """Weights, thresholds and 校核 deadlines. Defaults follow quality.md and domain.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_weights: dict[Severity, float] = Field(
        default_factory=lambda: {Severity.blocking: 3.0, Severity.warning: 1.0},
        description="w_r per severity in the dimension score")
    dimension_weights: dict[Dimension, float] = Field(
        default_factory=lambda: {
            Dimension.conformity: 15.0, Dimension.completeness: 20.0, Dimension.accuracy: 20.0,
            Dimension.consistency: 25.0, Dimension.timeliness: 15.0, Dimension.accessibility: 5.0,
        },
        description="W_d per GB/T 36344 dimension in the resource score")
    base_resource_weight: float = Field(default=2.0, gt=0, description="ω of a base-library resource in Q")
    data_weight: float = Field(default=0.8, ge=0, description="weight of Q in the total")
    response_weight: float = Field(default=0.2, ge=0, description="weight of R in the total")
    overdue_penalty: float = Field(default=5.0, ge=0, description="points off R per overdue ticket")
    grades: dict[str, float] = Field(
        default_factory=lambda: {"A": 95.0, "B": 90.0, "C": 80.0, "D": 60.0},
        description="grade → lowest total that earns it, best first")
    lowest_grade: str = "E"
    ticket_working_days: int = Field(default=5, ge=1, description="校核 deadline in working days")
    max_extension_working_days: int = Field(
        default=15, ge=0, description="total extension a ticket may receive, in working days, with approval")
    report_rows: int = Field(default=50, ge=1, description="failing records listed in the HTML (all in the XLSX)")
    trend_points: int = Field(default=12, ge=2, description="reports shown in the score trend")

    @model_validator(mode="after")
    def _check(self) -> ScorecardConfig:
        for sev in Severity:
            if self.rule_weights.get(sev, 0) <= 0:
                raise ValueError(f"rule_weights.{sev.value} must be > 0")
        for dim in Dimension:
            if self.dimension_weights.get(dim, -1) < 0:
                raise ValueError(f"dimension_weights.{dim.value} must be given and ≥ 0")
        if self.data_weight + self.response_weight <= 0:
            raise ValueError("data_weight + response_weight must be > 0")
        bounds = list(self.grades.values())
        if bounds != sorted(bounds, reverse=True):
            raise ValueError("grades must be listed best first with decreasing thresholds")
        return self


def load_config(catalogue_root: Path | None = None, env: Mapping[str, str] | None = None) -> ScorecardConfig:
    """The configuration: YAML (``GONGSHU_SCORECARD_CONFIG`` or the catalogue's ``scorecard.yaml``), then
    ``GONGSHU_SCORECARD_<FIELD>``: both from ``env``, the ``GONGSHU_SCORECARD_*`` variables the edge's
    settings hold (none given: the catalogue's file and the defaults)."""
    env = env or {}
    data: dict = {}
    path = Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else (catalogue_root / CONFIG_FILE if catalogue_root else None)
    if path is not None and path.exists():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: 不是有效的 YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: 顶层应为映射 (键: 值)")
        data.update(loaded)
        defaults = ScorecardConfig()
        for name in ("rule_weights", "dimension_weights"):  # a file may override some weights only
            if isinstance(data.get(name), dict):
                data[name] = {**{k.value: v for k, v in getattr(defaults, name).items()},
                              **{str(k): v for k, v in data[name].items()}}
    elif env.get(CONFIG_ENV):
        raise ConfigError(f"{CONFIG_ENV}={path}: 文件不存在")
    for name, info in ScorecardConfig.model_fields.items():
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and info.annotation in (int, float, str):
            data[name] = value
    try:
        return ScorecardConfig.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"评分配置有误 ({path or '环境变量'}): {exc}") from None
