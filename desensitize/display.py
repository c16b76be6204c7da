"""How values are written where people read them: Markdown metadata and spreadsheet files.

* **Markdown** (asset metadata previews, check samples, leak findings): a value is data, never
  markup. :func:`md_code` puts it in a code span, so the asterisks of a masked value
  (``339902********8144``) are not read as emphasis and a ``_`` or ``<`` in a name stays as it is;
  :func:`md_cell` does the same for a table cell (and escapes ``|``). The leak scanner reads code
  spans back (``desensitize/leaks.py``).
* **Spreadsheets** (open-data CSV, data dictionaries, report workbooks): a text cell that begins
  with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to Excel, WPS and
  LibreOffice (``=HYPERLINK("http://evil","x")``). Following the OWASP guidance on CSV injection,
  such a cell gets a leading single quote; a plain number (``-12.5``, ``+86…``) is left alone, since
  a spreadsheet reads it as the number it is, and numeric columns are never touched.
  :func:`spreadsheet_safe` does it for a whole frame, :func:`spreadsheet_text` for one cell, with
  the same pattern; :func:`unquote_formulas` takes that quote off again (what the leak scanner
  compares when it reads a CSV or workbook back).
"""

from __future__ import annotations

import re

import polars as pl

FORMULA_START = r"^[=+\-@\t\r]"
QUOTED_FORMULA = rf"^'({FORMULA_START.removeprefix('^')})"  # the quote neutralise_formulas puts before one
PLAIN_NUMBER = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"
_FORMULA = re.compile(FORMULA_START)
_NUMBER = re.compile(PLAIN_NUMBER)


def md_code(value: object) -> str:
    """``value`` as a Markdown code span (a fence longer than any backtick run inside it)."""
    text = re.sub(r"[\r\n]+", " ", str(value))
    if not text:
        return ""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_cell(value: object) -> str:
    """A Markdown table cell: empty for None, else a code span with ``|`` escaped."""
    return "" if value is None else md_code(value).replace("|", "\\|")


def spreadsheet_text(value: str) -> str:
    """One text cell, safe to open in a spreadsheet: a formula-like start gets a leading ``'``."""
    return "'" + value if _FORMULA.match(value) and not _NUMBER.match(value) else value


def neutralise_formulas(expr: pl.Expr) -> pl.Expr:
    """:func:`spreadsheet_text` as a polars expression over a text column."""
    risky = expr.str.contains(FORMULA_START) & ~expr.str.contains(PLAIN_NUMBER)
    return pl.when(risky.fill_null(False)).then(pl.concat_str([pl.lit("'"), expr])).otherwise(expr)


def unquote_formulas(expr: pl.Expr) -> pl.Expr:
    """The text a cell held before :func:`neutralise_formulas`: one leading ``'`` before a formula start taken off."""
    return expr.str.replace(QUOTED_FORMULA, "${1}")


def spreadsheet_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """Every text column of ``frame`` neutralised (numbers, dates and other types as they are)."""
    return frame.with_columns([neutralise_formulas(pl.col(n)).alias(n)
                               for n, t in frame.schema.items() if t == pl.String])
