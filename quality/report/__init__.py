"""The report each source department receives after a run (quality.md «The report a department receives»).

One per department and batch date, in Chinese: an HTML page (inline styles and tables, readable in
a mail client and a browser, charts embedded as base64 PNG) and an XLSX workbook. By stage:
:mod:`.inputs` (what every report of a period reads, loaded once), :mod:`.context` (one department's
report as data, pure), :mod:`.charts` and :mod:`.render` (PNG, HTML from a template, XLSX),
:mod:`.deliver` (files and mail, the engineers' escalation notice), :mod:`.period` (all of it for
one batch date, and the summary lines).
"""
