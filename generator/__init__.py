"""Synthetic department deliveries for a catalogue, with injected defects and their ground truth.

    from generator import generate
    manifest = generate(catalogue, persons=100_000, seed=7, date=dt.date(2026, 11, 21), out=Path("landing"))

Everything comes from the catalogue plus ``synthetic.yaml`` in its folder (see
:mod:`generator.config`); nothing here names a department, resource or element of any city.
Same catalogue, seed, sizes and dates → byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from tqdm import tqdm

from catalog.loader import Catalogue
from catalog.models import FileChannel
from generator.config import STALE, TRUNCATED, load_config
from generator.deliveries import build_delivery
from generator.pools import build_pools
from generator.population import World, build_world, load_regions, make_schedule, pool_order
from generator.writers import Writer

__all__ = ["GenerationResult", "generate", "generate_timed"]

MANIFEST_SCHEMA = {
    "class": pl.String, "department": pl.String, "resource": pl.String, "resource_id": pl.String,
    "batch_date": pl.String, "key": pl.String, "field": pl.String, "column": pl.String, "row": pl.Int64,
    "value_written": pl.String, "value_expected": pl.String,
}


@dataclass
class GenerationResult:
    """What a run produced: the manifest path, seconds per stage and rows written."""
    manifest: Path
    seconds: dict[str, float] = field(default_factory=dict)  # per stage
    rows: int = 0


def generate(catalogue: Catalogue, *, persons: int, seed: int, date: dt.date, out: Path, days: int = 1,
             progress: bool = True, change_rate: float | None = None, incremental: bool | None = None) -> Path:
    """Write every resource's deliveries for ``days`` batch dates ending on ``date`` under ``out``.

    Returns the path of ``manifest.json`` (parameters, rows per delivery, every injected defect).
    ``change_rate`` and ``incremental`` override ``synthetic.yaml``: the share of a resource's
    entities whose values change on each later day, and whether later full deliveries repeat the
    first one's defects instead of new ones. An incremental next day — the first-load night, then a
    night on which about 1 % of the entities changed — is ``days=2, change_rate=0.01,
    incremental=True`` (``gongshu generate --days 2 --change-rate 0.01 --steady-defects``).
    """
    return generate_timed(catalogue, persons=persons, seed=seed, date=date, out=out, days=days,
                          progress=progress, change_rate=change_rate, incremental=incremental).manifest


def generate_timed(catalogue: Catalogue, *, persons: int, seed: int, date: dt.date, out: Path, days: int = 1,
                   progress: bool = True, change_rate: float | None = None,
                   incremental: bool | None = None) -> GenerationResult:
    """:func:`generate`, also reporting seconds per stage and rows written (for benchmarks)."""
    if persons < 1:
        raise ValueError(f"--persons 须为正整数 (得到 {persons})")
    if days < 1:
        raise ValueError(f"--days 须为正整数 (得到 {days})")
    if change_rate is not None and not 0 <= change_rate <= 1:
        raise ValueError(f"--change-rate 须在 0 到 1 之间 (得到 {change_rate})")
    cfg = load_config(catalogue)
    overrides = {k: v for k, v in (("change_rate", change_rate), ("incremental", incremental)) if v is not None}
    if overrides:
        cfg = cfg.model_copy(update=overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    schedule = make_schedule(catalogue, cfg, date, days)
    result = GenerationResult(out / "manifest.json")
    encodings = {r.channel.encoding for r in catalogue.resources if isinstance(r.channel, FileChannel)}
    world = World(catalogue, cfg, seed, persons, schedule, build_pools(seed, cfg.pools, encodings),
                  load_regions(catalogue, cfg))
    n_stages = 1 + len(pool_order(world)) + len(catalogue.resources) + 1
    bar = tqdm(total=n_stages, desc="生成", unit="步", file=sys.stderr, disable=not progress, leave=False)
    clock = [time.perf_counter(), "值池"]

    def step(name: str) -> None:
        now = time.perf_counter()
        result.seconds[str(clock[1])] = result.seconds.get(str(clock[1]), 0.0) + now - float(clock[0])
        clock[0], clock[1] = now, name
        bar.set_postfix_str(name)
        bar.update(1)

    try:
        build_world(world, step)
        writer = Writer(out)
        resources: dict[str, dict] = {}
        defects: list[dict] = []
        for r in catalogue.resources:
            step(f"交付 {r.id}")
            rows: dict[str, int] = {}
            location = ""
            for day in schedule.deliveries[r.id]:
                d = build_delivery(world, r, day)
                location = writer.write(r, day, d.frame)
                rows[day.isoformat()] = d.rows
                result.rows += d.rows
                defects += d.records
            resources[r.id] = {"department": r.department, "resource": r.code, "library": r.library,
                               "channel": r.channel.kind, "location": location, "rows": rows}
            defects += _resource_level(r.id, r.department, r.code, rows, schedule.stale, schedule.is_truncated(
                r, schedule.deliveries[r.id][-1]))
        step("真值清单")
        write_manifest(result.manifest, _parameters(catalogue, persons, seed, date, days, schedule, cfg), world,
                       resources, defects)
        step("完成")
    finally:
        bar.close()
    result.seconds.pop("完成", None)
    return result


def _resource_level(rid: str, department: str, code: str, rows: dict[str, int], stale: str | None,
                    truncated: bool) -> list[dict]:
    base = {"department": department, "resource": code, "resource_id": rid, "key": None, "field": None,
            "column": None, "row": None}
    out = []
    days = sorted(rows)
    if rid == stale:
        out.append({"class": STALE, **base, "batch_date": days[-1], "value_written": days[-1],
                    "value_expected": None})
    if truncated:
        out.append({"class": TRUNCATED, **base, "batch_date": days[-1], "value_written": str(rows[days[-1]]),
                    "value_expected": str(rows[days[-2]])})
    return out


def _parameters(catalogue: Catalogue, persons: int, seed: int, date: dt.date, days: int, schedule, cfg) -> dict:
    return {"seed": seed, "persons": persons, "date": date.isoformat(), "days": days,
            "catalogue": str(catalogue.root), "batch_dates": [d.isoformat() for d in schedule.dates],
            "change_rate": cfg.change_rate, "incremental": cfg.incremental}


def write_manifest(path: Path, parameters: dict, world: World, resources: dict, defects: list[dict]) -> None:
    """manifest.json (parameters, populations, rows per delivery, defects) and manifest.parquet (defects)."""
    order: Callable[[dict], tuple] = lambda d: (d["resource_id"], d["batch_date"], d["row"] or 0, d["class"])  # noqa: E731
    defects = sorted(defects, key=order)
    doc = {
        "generator": "gongshu.generator",
        "parameters": parameters,
        "populations": {name: {"entities": p.size, "reserved_for_defects": int(p.reserved.sum())}
                        for name, p in world.entity_pools.items()},
        "resources": resources,
        "defects": defects,
    }
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    pl.DataFrame(defects, schema=MANIFEST_SCHEMA).write_parquet(path.with_suffix(".parquet"))
