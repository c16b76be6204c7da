"""The end-of-run summary: rows delivered / accepted / quarantined per resource, rows per library."""

from __future__ import annotations

import datetime as dt

from catalog.loader import Catalogue
from sharing.overdue import summary_lines as share_summary_lines
from warehouse.std import night_problems, reconciliation_for
from warehouse.store import Warehouse


def summary_lines(wh: Warehouse, catalogue: Catalogue, day: dt.date) -> list[str]:
    rec = {r["resource_id"]: r for r in reconciliation_for(wh, day).iter_rows(named=True)}
    problems = {r["resource_id"]: r for r in night_problems(wh, day).iter_rows(named=True)}
    lines = [f"\n归集汇总 · 批次日期 {day} · {catalogue.city.city.name}", ""]
    lines.append(f"{'资源':<24}{'最近批次':>12}{'交付':>10}{'接收':>10}{'隔离':>8}  对账")
    for r in sorted(catalogue.resources, key=lambda r: r.id):
        label = f"{r.department}/{r.code} {r.name}"
        row = rec.get(r.id)
        problem = problems.get(r.id)
        # a failed delivery or a withheld batch is the night's news, ahead of any earlier batch's counts
        note = f"  ✗ {problem['state']}: {problem['reason']}" if problem else ""
        if row is None:
            lines.append(f"{label:<24}{'未收到':>12}{note}")
            continue
        failed = row["status"] == "failed"
        ok = row["rows_delivered"] == row["rows_accepted"] + row["rows_quarantined"] and not failed
        stale = "" if row["batch_date"] == day else f"  (最近交付 {row['batch_date']})"
        unread = (f"  批次失败: 无法拆分为记录的文件 {row['unreadable_bytes']:,} 字节 / {row['unreadable_lines']:,} 行"
                  if failed else "")
        lines.append(
            f"{label:<24}{row['batch_date']!s:>12}{row['rows_delivered']:>10,}{row['rows_accepted']:>10,}"
            f"{row['rows_quarantined']:>8,}  {'✓' if ok else '✗'}{unread}{stale}{note}"
        )
    lines += ["", f"{'基础库':<16}{'现行实体':>12}{'历史版本':>12}"]
    with wh.engine.connect() as conn:
        for lib in catalogue.libraries:
            if not wh.exists("base", lib.code):
                lines.append(f"{lib.name:<16}{'(未建)':>12}")
                continue
            t = wh.qualified("base", lib.code)
            cur = wh.scalar(conn, f"SELECT COUNT(*) FROM {t} WHERE valid_to IS NULL")
            total = wh.scalar(conn, f"SELECT COUNT(*) FROM {t}")
            lines.append(f"{lib.name:<16}{cur:>12,}{total:>12,}")
    # 共享申请: the night after the batch date is when the bureau reads this summary
    return lines + share_summary_lines(wh, catalogue, day + dt.timedelta(days=1))
