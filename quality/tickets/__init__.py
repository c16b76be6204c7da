"""校核 tickets: every failing record and every 一数一源 conflict group sent back to its department.

By stage: :mod:`.transitions` (statuses, events and the pure table status × event → status; due
dates in working days), :mod:`.records` (the failing records of a batch, masked for people),
:mod:`.store` (``quality.tickets`` and ``audit.ticket_events``, changed through a ledger written
with set-based upserts), :mod:`.sync` (the nightly sync, run by the ``quality/tickets`` asset; the
counts the response score R is computed from), :mod:`.commands` (answer, extend, close, the reply
workbook). docs/reports.md describes the life of a ticket.
"""
