"""Asset keys, partitions and the names people read: what every Dagster definition of gongshu is named by.

Dagster 1.13 has no display name for an asset: its graph shows the last part of the key (``hjrk``
for both ``ods/gaj/hjrk`` and ``std/gaj/hjrk``), the kinds as badges below the box, and — with the
"Description" facet switched on, which is off by default — the description's first line. So:

* every description opens with the asset's label, layer · department · resource
  (:func:`resource_label`: ``标准层 · 市公安局 · 户籍人口信息``), the first line the asset's page, the
  catalogue list and the graph's Description facet show;
* the layer is also a kind (:func:`label_kinds`: ``ods``, ``std``, ``base``, ``share``, ``quality``), a
  badge the graph shows by default, so the ODS and 标准层 boxes of one resource read apart at a glance
  (and the catalogue filters by it, ``kind:std``). Kinds are tag keys, which Dagster allows in ASCII
  only: the department's and the resource's Chinese names cannot be badges;
* owners are the departments' names (``team:市公安局``): Dagster allows owners only as e-mail
  addresses or ``team:`` names. Group names stay the library codes (Dagster allows only ASCII names
  and no group description); the base library's label names the library in Chinese.
"""

from __future__ import annotations

import datetime as dt

from dagster import AssetKey, DailyPartitionsDefinition

from catalog.loader import Catalogue, CatalogueError
from catalog.models import DatabaseChannel, Labelled, Library, Resource


class Layer(Labelled):
    """The layer an asset belongs to: its code is the first part of the key and the kind badge."""

    ods = "ods", "贴源层"
    std = "std", "标准层"
    base = "base", "基础库"
    share = "share", "共享开放"
    quality = "quality", "数据质量"


def first_batch_date(catalogue: Catalogue) -> dt.date:
    """The first batch date of the city: ``city.first_batch_date`` in the catalogue, else the earliest
    ``initial_load`` of its 前置库 channels. Partitions start there; a backfill further back moves
    this date in the catalogue first (docs/catalogue.md, «首个批次日期»)."""
    if catalogue.city.city.first_batch_date is not None:
        return catalogue.city.city.first_batch_date
    loads = [r.channel.initial_load for r in catalogue.resources
             if isinstance(r.channel, DatabaseChannel) and r.channel.initial_load is not None]
    if loads:
        return min(loads)
    raise CatalogueError([f"{catalogue.root / 'catalogue.yaml'}: city.first_batch_date (首个批次日期) 未设定: "
                          "每日分区从该日期开始, 请填写本市最早一批交付的批次日期, 如 2026-09-01"])


def daily_partitions(catalogue: Catalogue) -> DailyPartitionsDefinition:
    """Batch dates from the city's first batch date, in the city's time zone; the partition of day D
    is complete at D+1 00:00."""
    return DailyPartitionsDefinition(start_date=first_batch_date(catalogue).isoformat(),
                                     timezone=catalogue.city.city.timezone)


def ods_key(resource: Resource) -> AssetKey:
    return AssetKey(["ods", resource.department, resource.code])


def std_key(resource: Resource) -> AssetKey:
    return AssetKey(["std", resource.department, resource.code])


def base_key(lib: Library) -> AssetKey:
    return AssetKey(["base", lib.code])


def resource_label(catalogue: Catalogue, resource: Resource, layer: str) -> str:
    """``贴源层 · 市公安局 · 户籍人口信息``: the label of a resource's asset in ``layer`` (ods, std)."""
    return f"{Layer(layer).label} · {catalogue.department(resource.department).name} · {resource.name}"


def library_label(lib: Library) -> str:
    """``基础库 · 人口基础库``."""
    return f"{Layer.base.label} · {lib.name}"


def label_kinds(layer: str) -> set[str]:
    """The kind that names an asset's layer in the graph (``ods``, ``std`` …; ASCII, as tag keys must be)."""
    return {Layer(layer).value}


def labelled(label: str, description: str) -> str:
    """A description that opens with the asset's label (its first line is what the graph shows)."""
    return f"{label}\n\n{description}"


def owner(catalogue: Catalogue, department: str) -> str:
    """The department as an asset owner: ``team:市公安局``."""
    return f"team:{catalogue.department(department).name}"
