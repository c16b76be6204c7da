"""Asset keys and partitions: what every Dagster definition of gongshu is named by."""

from __future__ import annotations

from dagster import AssetKey, DailyPartitionsDefinition

from catalog.loader import Catalogue
from catalog.models import Library, Resource


def daily_partitions(catalogue: Catalogue, start_date: str = "2024-01-01") -> DailyPartitionsDefinition:
    """Batch dates, in the city's time zone; the partition of day D is complete at D+1 00:00."""
    return DailyPartitionsDefinition(start_date=start_date, timezone=catalogue.city.city.timezone)


def ods_key(resource: Resource) -> AssetKey:
    return AssetKey(["ods", resource.department, resource.code])


def std_key(resource: Resource) -> AssetKey:
    return AssetKey(["std", resource.department, resource.code])


def base_key(lib: Library) -> AssetKey:
    return AssetKey(["base", lib.code])
