"""Tables for the terminal, padded by display width: a Chinese character (East Asian Wide) takes two
columns, so ``f"{name:<24}"`` — which counts characters — misaligns every row that holds Chinese.
Used by the end-of-run summary, the freshness table and the report lines of ``gongshu``."""

from __future__ import annotations

from collections.abc import Sequence

from wcwidth import wcswidth, wcwidth


def width(text: str) -> int:
    """Columns ``text`` takes in a terminal (wide characters 2, combining marks 0)."""
    n = wcswidth(text)
    return n if n >= 0 else sum(max(0, wcwidth(c)) for c in text)  # a control character counts as nothing


def pad(text: str, columns: int, align: str = "<") -> str:
    """``text`` padded with spaces to ``columns`` display columns: ``<`` left, ``>`` right."""
    fill = " " * max(0, columns - width(text))
    return text + fill if align == "<" else fill + text


def table(rows: Sequence[Sequence[object]], align: str, gap: int = 2, indent: str = "") -> list[str]:
    """Rows (the first usually the header) as aligned lines: each column as wide as its widest cell,
    ``align`` one ``<`` or ``>`` per column. The last column is not padded when left-aligned, so a
    line ends with its text (notes after it stay readable)."""
    cells = [["" if c is None else str(c) for c in row] for row in rows]
    n = max((len(r) for r in cells), default=0)
    cells = [r + [""] * (n - len(r)) for r in cells]
    widths = [max(width(r[i]) for r in cells) for i in range(n)]
    lines = []
    for r in cells:
        parts = [pad(c, widths[i], align[i] if i < len(align) else "<") for i, c in enumerate(r)]
        if n and (align[n - 1] if n - 1 < len(align) else "<") == "<":
            parts[-1] = r[-1]
        lines.append((indent + (" " * gap).join(parts)).rstrip())
    return lines
