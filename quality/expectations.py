"""Great Expectations 1.x: the record of every rule.

Each :class:`~quality.rules.Rule` becomes one expectation in a suite per resource; the suite runs
in an ephemeral context against an Arrow-backed pandas frame of the batch. ID-number and USCC
checksums have no built-in expectation, so two custom ones are defined here — implemented with
numpy over the pandas column, independently of the polars predicates in :mod:`quality.rules`,
so the test that both engines count the same failures compares two implementations.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from quality.docs_assets import STATIC, localised_page
from quality.rules import Kind, Rule

ID_W = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
USCC_ALPHA = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_W = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28])


def _quiet() -> None:
    """No progress bars, no analytics, no INFO chatter in the run logs."""
    for name in ("great_expectations", "great_expectations.core", "great_expectations.validator"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="great_expectations")


def _fixed_width_bytes(values: pd.Series, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-null values of exactly ``width`` bytes as an (n, width) uint8 matrix, and which rows they are.

    Reads the Arrow data buffer directly: no Python object per value. Callers check the bytes.
    """
    if isinstance(values.dtype, pd.ArrowDtype):
        arr = pa.chunked_array(values.array._pa_array).combine_chunks()
    else:
        arr = pa.array(values.astype("string[pyarrow]").array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    ok = pc.fill_null(pc.equal(pc.binary_length(arr), width), False).to_numpy(zero_copy_only=False)
    sel = arr.filter(pa.array(ok))
    if len(sel) == 0:
        return ok, np.zeros((0, width), dtype=np.uint8)
    offsets = np.frombuffer(sel.buffers()[1], dtype=np.int64)[sel.offset: sel.offset + len(sel) + 1]
    data = np.frombuffer(sel.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    return ok, data.reshape(-1, width)


def _id_bytes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Rows shaped like an 18-character ID number (17 digits, then a digit or X) and their digits."""
    ok, b = _fixed_width_bytes(values, 18)
    shaped = ((b[:, :17] >= 48) & (b[:, :17] <= 57)).all(axis=1) & (((b[:, 17] >= 48) & (b[:, 17] <= 57))
                                                                   | (b[:, 17] == 88))
    ok[ok] = shaped
    return ok, b[shaped]


def _real_dates(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since the epoch of (y, m, d), or -2**62 where the date does not exist."""
    good = (m >= 1) & (m <= 12) & (d >= 1) & (y >= 1)
    months = (np.where(good, y, 1970) - 1970) * 12 + np.where(good, m, 1) - 1
    first = months.astype("datetime64[M]").astype("datetime64[D]")
    day = first + (np.where(good, d, 1) - 1)
    good &= day.astype("datetime64[M]") == months.astype("datetime64[M]")
    return np.where(good, day.astype(np.int64), -(2**62))


def id_numbers_valid_np(values: pd.Series, max_birth: str | None) -> pd.Series:
    """GB 11643 check over a pandas column (format, check character, birth date)."""
    ok, b = _id_bytes(values)
    out = np.zeros(len(values), dtype=bool)
    if len(b):
        digits = b[:, :17].astype(np.int32) - 48
        check = np.frombuffer(b"10X98765432", dtype=np.uint8)[(digits @ ID_W.astype(np.int32)) % 11]
        good = check == b[:, 17]
        y = digits[:, 6:10] @ np.array([1000, 100, 10, 1])
        m = digits[:, 10:12] @ np.array([10, 1])
        d = digits[:, 12:14] @ np.array([10, 1])
        days = _real_dates(y, m, d)
        hi = np.datetime64(max_birth or dt.date.today().isoformat(), "D").astype(np.int64)
        lo = np.datetime64("1850-01-01", "D").astype(np.int64)
        out[ok] = good & (days >= lo) & (days <= hi)
    return pd.Series(out, index=values.index)


def id_derived_np(values: pd.Series, part: str) -> pd.Series:
    """Birth date (days since 1970-01-01) or gender code (1 male, 2 female) read from ID numbers."""
    ok, b = _id_bytes(values)
    out = np.zeros(len(values), dtype=np.int64)
    valid = ok.copy()
    if len(b):
        digits = b[:, :17].astype(np.int32) - 48
        if part == "gender":
            out[ok] = np.where(digits[:, 16] % 2 == 1, 1, 2)
        else:
            y = digits[:, 6:10] @ np.array([1000, 100, 10, 1])
            m = digits[:, 10:12] @ np.array([10, 1])
            d = digits[:, 12:14] @ np.array([10, 1])
            days = _real_dates(y, m, d)
            out[ok] = days
            valid[ok] = days > -(2**62)
    return pd.Series(pd.arrays.IntegerArray(out, ~valid), index=values.index)


_USCC_TABLE = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate(USCC_ALPHA):
    _USCC_TABLE[ord(_c)] = _i


def usccs_valid_np(values: pd.Series) -> pd.Series:
    """GB 32100 check over a pandas column."""
    ok, b = _fixed_width_bytes(values, 18)
    out = np.zeros(len(values), dtype=bool)
    if len(b):
        idx = _USCC_TABLE[b]
        digits_ok = ((b[:, 2:8] >= 48) & (b[:, 2:8] <= 57)).all(axis=1)  # 3–8: 行政区划码
        check = (31 - (idx[:, :17] * USCC_W).sum(axis=1) % 31) % 31
        out[ok] = (idx >= 0).all(axis=1) & digits_ok & (check == idx[:, 17])
    return pd.Series(out, index=values.index)


@cache
def _custom_expectations():
    """Define (once) the custom expectations and their metrics; GX registers them by class creation."""
    _quiet()
    from great_expectations.execution_engine import PandasExecutionEngine
    from great_expectations.expectations.expectation import ColumnMapExpectation
    from great_expectations.expectations.metrics import ColumnMapMetricProvider, column_condition_partial

    class ColumnValuesValidIdNumber(ColumnMapMetricProvider):
        condition_metric_name = "column_values.gongshu_valid_id_number"
        condition_value_keys = ("max_birth",)

        @column_condition_partial(engine=PandasExecutionEngine)
        def _pandas(cls, column, max_birth=None, **kwargs):
            return id_numbers_valid_np(column, max_birth)

    class ColumnValuesValidUscc(ColumnMapMetricProvider):
        condition_metric_name = "column_values.gongshu_valid_uscc"

        @column_condition_partial(engine=PandasExecutionEngine)
        def _pandas(cls, column, **kwargs):
            return usccs_valid_np(column)

    class ExpectColumnValuesToBeValidIdNumber(ColumnMapExpectation):
        """公民身份号码: 18 characters, GB 11643 check character, a real birth date."""

        max_birth: str | None = None
        map_metric = "column_values.gongshu_valid_id_number"
        success_keys = ("mostly", "max_birth")

    class ExpectColumnValuesToBeValidUscc(ColumnMapExpectation):
        """统一社会信用代码: GB 32100 alphabet and check character."""

        map_metric = "column_values.gongshu_valid_uscc"
        success_keys = ("mostly",)

    return ExpectColumnValuesToBeValidIdNumber, ExpectColumnValuesToBeValidUscc


def derived_column(rule: Rule) -> str:
    return f"__from_id__{rule.column}"


def text_column(rule: Rule) -> str:
    """The checked element as an integer (date → days since 1970, gender code → number)."""
    return f"__int__{rule.column}"


def expectation_for(rule: Rule):
    """The GX expectation that records ``rule``."""
    import great_expectations as gx

    ExpectId, ExpectUscc = _custom_expectations()
    meta = {"rule_id": rule.id, "dimension": rule.dimension.value, "severity": rule.severity.value}
    E = gx.expectations
    c = rule.column
    match rule.kind:
        case Kind.not_null:
            return E.ExpectColumnValuesToNotBeNull(column=c, meta=meta)
        case Kind.unique:
            if len(rule.columns) == 1:
                return E.ExpectColumnValuesToBeUnique(column=c, meta=meta)
            return E.ExpectCompoundColumnsToBeUnique(column_list=list(rule.columns), meta=meta,
                                                     ignore_row_if="any_value_is_missing")
        case Kind.id_number:
            today = rule.params.get("today")
            return ExpectId(column=c, max_birth=today.isoformat() if today else None, meta=meta)
        case Kind.uscc:
            return ExpectUscc(column=c, meta=meta)
        case Kind.mobile:
            return E.ExpectColumnValuesToMatchRegex(column=c, regex=r"^1[3-9]\d{9}$", meta=meta)
        case Kind.code_list:
            return E.ExpectColumnValuesToBeInSet(column=c, value_set=list(rule.params["values"]), meta=meta)
        case Kind.pattern:
            return E.ExpectColumnValuesToMatchRegex(column=c, regex=rule.params["regex"], meta=meta)
        case Kind.date_range:
            hi = rule.params.get("max")
            return E.ExpectColumnValuesToBeBetween(
                column=c, min_value=pd.Timestamp(rule.params["min"]), max_value=pd.Timestamp(hi) if hi else None,
                meta=meta)
        case Kind.id_birth_date | Kind.id_gender:
            return E.ExpectColumnPairValuesToBeEqual(column_A=text_column(rule), column_B=derived_column(rule),
                                                     ignore_row_if="either_value_is_missing", meta=meta)
    raise ValueError(rule.kind)


def gx_frame(frame: pl.DataFrame, rules: list[Rule]) -> pd.DataFrame:
    """The pandas frame GX reads: the rule columns, dates as ISO text, derived ID columns."""
    cols = sorted({c for r in rules for c in r.columns})
    dates = {r.column for r in rules if r.kind == Kind.date_range}
    df = frame.select([
        pl.col(c).cast(pl.Datetime("ns")) if c in dates
        else pl.col(c).dt.strftime("%Y-%m-%d") if frame.schema[c] == pl.Date else pl.col(c)
        for c in cols
    ])
    pdf = df.to_pandas(use_pyarrow_extension_array=True)
    for c in dates:  # GX compares timestamps, not Arrow timestamps
        pdf[c] = pdf[c].astype("datetime64[ns]")
    for r in rules:
        if r.kind in (Kind.id_birth_date, Kind.id_gender):
            part = "birth_date" if r.kind == Kind.id_birth_date else "gender"
            pdf[derived_column(r)] = id_derived_np(pdf[r.columns[1]], part)
            own = frame.get_column(r.column)
            own = own.cast(pl.Int64) if own.dtype == pl.Date else own.cast(pl.Int64, strict=False)
            pdf[text_column(r)] = pd.Series(pd.arrays.IntegerArray(own.fill_null(0).to_numpy(),
                                                                   own.is_null().to_numpy()), index=pdf.index)
    return pdf


@dataclass
class GxResult:
    rule_id: str
    evaluated: int
    failed: int
    success: bool


def _fingerprint(df: pd.DataFrame) -> str:
    """Batch fingerprint for GX's batch markers.

    GX hashes every cell of the frame (twice per validation: ~0.8 s per million rows each) only to
    name the batch; our batches are ephemeral and named by the warehouse batch id already.
    """
    import hashlib

    return hashlib.md5(f"{id(df)}:{df.shape}:{list(df.columns)}".encode(), usedforsecurity=False).hexdigest()


@cache
def _context():
    _quiet()
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.hash_pandas_dataframe = _fingerprint
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _strip_values(result) -> None:
    """Drop every list of failing values from a validation result: the page shows counts and rates,
    never a raw identifier (failing keys are in the quality layer, masked)."""
    for res in result.results:
        rr = res.result or {}
        for k in [k for k in rr if k.startswith(("partial_unexpected", "unexpected_list", "unexpected_index"))]:
            rr.pop(k)


def write_data_docs(result, path: Path, static: Path | None = None) -> Path:
    """Render one validation result as a Great Expectations Data Docs page (GX's own renderer), its
    CDN links pointed at the local copies in ``static`` (default: ``_static`` beside the page's
    folder, ``<docs>/_static`` for a page at ``<docs>/<resource>/<batch>.html``; quality/docs_assets.py)."""
    from great_expectations.render.renderer.page_renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    _strip_values(result)
    html = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
    html = localised_page(html, path, static or path.parent.parent / STATIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path


class Validation:
    """One batch validated by GX a slice at a time (:func:`validate` is one slice).

    Each :meth:`add` runs the suite on a slice of the batch; the results are added up expectation
    by expectation (row counts summed, rates recomputed from the sums, an expectation fails when it
    fails on any slice: none of the suite's expectations has ``mostly``), so the counts, the Data
    Docs page and the success are those of the whole batch as long as no expectation compares rows
    of different slices — the 标准层 puts every copy of a key in the same slice for the unique rule.
    """

    def __init__(self, rules: list[Rule], name: str) -> None:
        self.rules, self.name = rules, name
        self.result = None
        self.rows = 0
        self.slices = 0

    def add(self, frame: pl.DataFrame) -> None:
        import great_expectations as gx

        if not self.rules:
            return
        ctx = _context()
        suite = gx.ExpectationSuite(name=self.name)
        for r in self.rules:
            suite.add_expectation(expectation_for(r))
        # A data source of its own for each slice, deleted once validated: a data source's execution
        # engine keeps every batch it loaded (and the metrics computed on it, keyed by the batch's
        # fingerprint) for as long as the data source lives — one shared by the slices kept the whole
        # batch in pandas form until the process ended (~60 MB per 200,000 户籍 records).
        # named by the slice's number: the Data Docs page shows the name (as the batch id), and a random
        # hex name sometimes held a run of digits shaped like a mobile number
        self.slices += 1
        ds_name = f"ds_{self.name}_slice{self.slices}"
        ds = ctx.data_sources.add_pandas(ds_name)
        try:
            batch = ds.add_dataframe_asset("slice").add_batch_definition_whole_dataframe("whole").get_batch(
                batch_parameters={"dataframe": gx_frame(frame, self.rules)})
            result = batch.validate(suite, result_format="SUMMARY")
            del batch
        finally:
            ctx.data_sources.delete(ds_name)
        self.rows += frame.height
        if self.result is None:
            self.result = result
            return
        _strip_values(result)
        _strip_values(self.result)
        for mine, theirs in zip(self.result.results, result.results, strict=True):
            _add_counts(mine, theirs)
        stats = self.result.statistics
        ok = sum(1 for r in self.result.results if r.success)
        stats["successful_expectations"] = ok
        stats["unsuccessful_expectations"] = len(self.result.results) - ok
        stats["success_percent"] = ok / len(self.result.results) * 100 if self.result.results else None
        self.result.success = ok == len(self.result.results)

    def finish(self, docs: Path | None = None) -> tuple[list[GxResult], dict]:
        """Per-rule counts and the raw result; with ``docs`` the validation is also rendered as a Data
        Docs page at that path (``raw["data_docs"]``)."""
        if self.result is None:
            return [], {}
        out = []
        for res in self.result.results:
            meta = res.expectation_config.meta or {}
            rule = next(r for r in self.rules if r.id == meta["rule_id"])
            rr = res.result or {}
            element = int(rr.get("element_count", self.rows) or 0)
            missing = int(rr.get("missing_count") or 0)
            unexpected = int(rr.get("unexpected_count") or 0)
            # completeness and uniqueness count every row; map rules count the non-null values
            evaluated = element if rule.counts_nulls else element - missing
            out.append(GxResult(rule.id, evaluated, unexpected, bool(res.success)))
        raw = self.result.to_json_dict()
        if docs is not None:
            raw["data_docs"] = str(write_data_docs(self.result, docs).resolve())
        return out, raw


def _add_counts(mine, theirs) -> None:
    """Add one slice's result of an expectation to the running one, as GX would have counted the
    rows of both at once (``_format_map_output``: the rates from the counts)."""
    a, b = mine.result, theirs.result or {}
    for k in ("element_count", "missing_count", "unexpected_count"):
        if k in a:
            a[k] = int(a[k] or 0) + int(b.get(k) or 0)
    e, u = a.get("element_count") or 0, a.get("unexpected_count")
    if u is not None:
        total = u / e * 100 if e else None
        nonmissing = total
        if "missing_count" in a:
            m = a["missing_count"]
            a["missing_percent"] = m / e * 100 if e else None
            nonmissing = u / (e - m) * 100 if e - m > 0 else None
            a["unexpected_percent_nonmissing"] = nonmissing
        if "unexpected_percent_total" in a:
            a["unexpected_percent_total"] = total
        a["unexpected_percent"] = nonmissing
    mine.success = bool(mine.success) and bool(theirs.success)


def validate(
    frame: pl.DataFrame, rules: list[Rule], name: str, docs: Path | None = None
) -> tuple[list[GxResult], dict]:
    """Run the suite of ``rules`` on ``frame`` with GX; returns per-rule counts and the raw result.

    With ``docs`` the validation is also rendered as a Data Docs page at that path (``raw["data_docs"]``).
    """
    v = Validation(rules, name)
    v.add(frame)
    return v.finish(docs)


def warm_up() -> None:
    """Import GX and build its context and custom expectations (seconds, once per process)."""
    _context()
    _custom_expectations()
