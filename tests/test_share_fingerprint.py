"""The fingerprint of application extracts, pure: what it survives and what it does not, and its
accuracy on 100 sampled leaks per application (identified / wrongly identified / not identified)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from desensitize.pseudonym import PseudonymKey
from sharing.extract import build_frame
from sharing.fingerprint import MARK, PLAIN, detect, embed, strip, watermark_key
from tests.share_city import demo_catalogue, persons

KEY = PseudonymKey(b"fingerprint-test-key-0123456789")
AS_OF = dt.date(2026, 11, 20)
APPS = {  # the demo's application, and two others on the same library
    "GX-20261120-0001": ["name", "mobile"],
    "GX-20261120-0002": ["name", "mobile"],
    "GX-20261120-0003": ["mobile", "insurance_status"],
}


def app(app_id: str) -> dict:
    return {"application_id": app_id, "kind": "share", "library": "person", "row_filter": None}


@pytest.fixture(scope="module")
def extracts() -> dict[str, pl.DataFrame]:
    cat, rows = demo_catalogue(), persons(3000).with_columns(pl.lit(dt.date(2026, 11, 1)).alias("valid_from"))
    return {a: build_frame(cat, app(a), els, rows, AS_OF, KEY)[1] for a, els in APPS.items()}


def keys() -> dict[str, bytes]:
    return {a: watermark_key(KEY, a) for a in APPS}


def test_embedding_changes_only_mask_characters(extracts) -> None:
    frame = extracts["GX-20261120-0001"]
    assert frame.get_column("mobile").str.contains(MARK, literal=True).any()
    assert frame.get_column("mobile").str.contains(PLAIN, literal=True).any()
    again = embed(strip(frame), watermark_key(KEY, "GX-20261120-0001"))
    assert again.equals(frame)  # a function of the value: the same pattern every night
    assert strip(frame).get_column("mobile").str.contains(r"^1\d{2}\*{4}\d{4}$").all()


def leak(frame: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """A leak as people make them: 100–500 sampled rows, the token and key-id columns dropped, some other
    columns dropped too, the rest in a random order and renamed."""
    n = int(rng.integers(100, 501))
    rows = frame.sample(n, seed=int(rng.integers(1 << 31)))
    cols = [c for c in rows.columns if c not in ("id_number__token", "_key_id")]
    kept = [c for c in cols if rng.random() < 0.6] or [cols[int(rng.integers(len(cols)))]]
    kept = list(rng.permutation(kept))
    return rows.select(kept).rename({c: f"字段{i}" for i, c in enumerate(kept)})


def test_accuracy_on_100_sampled_leaks_of_each_application(extracts) -> None:
    rng = np.random.default_rng(20261204)
    figures = {}
    for a, frame in extracts.items():
        ok = wrong = none = 0
        unmasked_only = 0
        for _ in range(100):
            x = leak(frame, rng)
            v = detect(x, keys())
            if v.application_id == a:
                ok += 1
            elif v.application_id is not None:
                wrong += 1
            else:
                none += 1
                unmasked_only += not any(x.get_column(c).str.contains(r"[*＊]").any() for c in x.columns
                                         if x.schema[c] == pl.String)
        figures[a] = (ok, wrong, none, unmasked_only)
    print("\ntrace accuracy (identified / wrongly identified / not identified [of which: no masked column left])")
    for a, (ok, wrong, none, bare) in figures.items():
        print(f"  {a} {APPS[a]}: {ok} / {wrong} / {none} [{bare}]")
    assert all(f[1] == 0 for f in figures.values())  # never another application
    assert all(f[2] == f[3] for f in figures.values())  # a leak with a masked column left is always identified


def test_a_leak_of_another_application_is_never_claimed(extracts) -> None:
    rng = np.random.default_rng(1)
    only_first = {"GX-20261120-0001": watermark_key(KEY, "GX-20261120-0001")}
    for _ in range(50):
        v = detect(leak(extracts["GX-20261120-0002"], rng), only_first)
        assert v.application_id is None


def test_what_the_fingerprint_does_not_survive(extracts) -> None:
    frame = extracts["GX-20261120-0001"].sample(300, seed=3)
    assert detect(strip(frame), keys()).application_id is None  # mask characters normalised
    assert detect(frame.select("valid_from"), keys()).application_id is None  # only unmasked columns
    small = frame.head(3).select("mobile")  # too few rows: not enough bits for a verdict
    v = detect(small, keys())
    assert v.application_id is None and "不足" in v.reason
