"""The department scorecard (quality.md «Scorecard»), by stage: :mod:`.inputs` (rule and ticket
counts from the warehouse), :mod:`.compute` (the pure formulas), :mod:`.store` (``quality.scorecard``,
one row per rule, resource and department of each run), :mod:`.render` (the table people read),
:mod:`.period` (one period end to end). It computes and stores scores; the 校核 tickets it reads
are synced before it by the ``quality/tickets`` asset."""
