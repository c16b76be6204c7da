"""The end-of-run summary: rows delivered / accepted / quarantined per resource, rows per library."""

from __future__ import annotations

import datetime as dt

from catalog.loader import Catalogue
from quality.terminal import table
from sharing.overdue import summary_lines as share_summary_lines
from warehouse.std import night_problems, reconciliation_for
from warehouse.store import Warehouse


def summary_lines(wh: Warehouse, catalogue: Catalogue, day: dt.date) -> list[str]:
    rec = {r["resource_id"]: r for r in reconciliation_for(wh, day).iter_rows(named=True)}
    problems = {r["resource_id"]: r for r in night_problems(wh, day).iter_rows(named=True)}
    lines = [f"\n归集汇总 · 批次日期 {day} · {catalogue.city.city.name}", ""]
    rows: list[list[object]] = [["资源", "最近批次", "交付", "接收", "隔离", "对账"]]
    for r in sorted(catalogue.resources, key=lambda r: r.id):
        label = f"{r.department}/{r.code} {r.name}"
        row = rec.get(r.id)
        problem = problems.get(r.id)
        # a failed delivery or a withheld batch is the night's news, ahead of any earlier batch's counts
        note = f"  ✗ {problem['state']}: {problem['reason']}" if problem else ""
        if row is None:
            rows.append([label, "未收到", "", "", "", note.strip()])
            continue
        failed = row["status"] == "failed"
        ok = row["rows_delivered"] == row["rows_accepted"] + row["rows_quarantined"] and not failed
        stale = "" if row["batch_date"] == day else f"  (最近交付 {row['batch_date']})"
        unread = (f"  批次失败: 无法拆分为记录的文件 {row['unreadable_bytes']:,} 字节 / {row['unreadable_lines']:,} 行"
                  if failed else "")
        rows.append([label, str(row["batch_date"]), f"{row['rows_delivered']:,}", f"{row['rows_accepted']:,}",
                     f"{row['rows_quarantined']:,}", f"{'✓' if ok else '✗'}{unread}{stale}{note}"])
    lines += table(rows, "<>>>><")
    libraries: list[list[object]] = [["基础库", "现行实体", "历史版本"]]
    with wh.engine.connect() as conn:
        for lib in catalogue.libraries:
            if not wh.exists("base", lib.code):
                libraries.append([lib.name, "(未建)", ""])
                continue
            t = wh.qualified("base", lib.code)
            cur = wh.scalar(conn, f"SELECT COUNT(*) FROM {t} WHERE valid_to IS NULL")
            total = wh.scalar(conn, f"SELECT COUNT(*) FROM {t}")
            libraries.append([lib.name, f"{cur:,}", f"{total:,}"])
    # 共享申请: the night after the batch date is when the bureau reads this summary
    return [*lines, "", *table(libraries, "<>>"), *share_summary_lines(wh, catalogue, day + dt.timedelta(days=1))]
