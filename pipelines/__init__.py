"""The orchestration layer: the Dagster code location, the jobs, sensors and the ``gongshu`` CLI.

Importing it sets one process default before anything here loads polars: polars' allocator
(jemalloc, linked into polars and configured from ``_RJEM_MALLOC_CONF`` when polars loads) keeps
pages it freed for 0.5–1.5 s before giving them back, so a step slicing its batch held the freed
slices' pages beside the next ones. With ``dirty_decay_ms:0,muzzy_decay_ms:0`` freed pages go back at
once: the 户籍 step at 200,000 persons peaked at 582 MB instead of 644 MB (20,000 persons: 469 / 495 MB),
for ~3 % more CPU in the night. The code server, the run worker, every step process and the Celery
workers import this package, and processes they start inherit the setting (polars documents the
variable; importing polars writes its own defaults into it, which are not an operator's). An
operator's own value is kept (docs/deploy.md).
"""

import os

ALLOCATOR_ENV = "_RJEM_MALLOC_CONF"
ALLOCATOR_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"
_POLARS_OWN = {"dirty_decay_ms:500", "muzzy_decay_ms:1000", "thp:always", "metadata_thp:always"}

_given = [p for p in os.environ.get(ALLOCATOR_ENV, "").split(",") if p]
if all(p in _POLARS_OWN for p in _given):
    os.environ[ALLOCATOR_ENV] = ",".join([*_given, ALLOCATOR_CONF])
