"""时效性 (timeliness): is each resource as fresh as its 更新周期 promises? (docs/freshness.md)

By stage: :mod:`.calendar` (Chinese working days and the clock), :mod:`.evaluate` (the rule as pure
functions: when a delivery counts, when the next one is due, when the resource turns stale, its
status; the coarse Dagster policy spans), :mod:`.store` (last deliveries from ``ods.batches``, the
state table ``quality.freshness``), :mod:`.render` (summary lines and the notices mailed on a change).
The ``freshness`` asset check (assets/freshness.py) is the one place that evaluates and stores.
"""
