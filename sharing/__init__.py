"""共享申请 (share applications) and 依申请开放 (open data on request): the workflow from the
application to the nightly extract, its fingerprint, and the audit.

By stage: :mod:`.workflow` (statuses, events and the pure table status × event → status; deadlines
in Chinese working days), :mod:`.elements` (what the catalogue says of each requested element:
无条件 / 有条件 / 不予, and its authoritative department by 一数一源), :mod:`.store`
(``share.applications``, ``share.application_elements`` and the append-only ``audit.share_*``
tables, created by migration 0006), :mod:`.commands` (apply, review, approve, reject, revoke,
expire), :mod:`.fingerprint` (the per-application keyed watermark), :mod:`.extract` (one
application's extract: masked, watermarked, written as CSV/XLSX with a manifest), :mod:`.trace`
(which application a leaked file came from). docs/sharing.md describes the whole.
"""
