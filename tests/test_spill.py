"""A new batch's rows between the channel and the two writers (guiji/spill.py): in memory up to one
slice, beyond that in key buckets on local disk — read back whole, in slices that keep every copy of a
key together, without the records carried from the previous batch."""

from __future__ import annotations

import os

import polars as pl
import pytest

from guiji.spill import FIRST_ROWS, Spill

KEY = [pl.col("k").str.strip_chars().alias("__key_k")]  # two spellings of one key are one key


def _pages(n: int, page: int) -> list[pl.DataFrame]:
    rows = pl.DataFrame({
        "_row_no": list(range(1, n + 1)),
        "_source": ["a.csv"] * n,
        "k": [None if i % 17 == 0 else (f" {i % 40}" if i % 2 else f"{i % 40}") for i in range(1, n + 1)],
        "v": [f"值{i}" for i in range(1, n + 1)],
    }, schema={"_row_no": pl.Int64, "_source": pl.String, "k": pl.String, "v": pl.String})
    return [rows.slice(i, page) for i in range(0, n, page)]


def _filled(pages: list[pl.DataFrame], memory_rows: int, buckets: int = 16) -> Spill:
    spill = Spill(KEY, memory_rows, buckets)
    for p in pages:
        spill.add(p)
    spill.finish()
    return spill


@pytest.mark.parametrize("memory_rows", [10_000, 50], ids=["in-memory", "spilled"])
def test_the_rows_read_back_are_the_rows_added_in_slices_that_keep_each_key_together(memory_rows: int) -> None:
    pages = _pages(300, 64)
    whole = pl.concat(pages)
    spill = _filled(pages, memory_rows)
    try:
        assert spill.spilled == (memory_rows < 300) and spill.height == spill.rows == 300
        assert pl.concat(list(spill.pages())).sort("_row_no").equals(whole)
        slices = list(spill.slices(60))
        assert pl.concat(slices).sort("_row_no").equals(whole)
        keys = [set(s.select(KEY).get_column("__key_k").drop_nulls()) for s in slices]
        assert all(not (a & b) for i, a in enumerate(keys) for b in keys[i + 1:])  # a key is in one slice only
        assert len(slices) > 1
        assert all(max(s.n_chunks("all")) == 1 for s in slices)  # each standardised in one piece
        if spill.spilled:  # buckets of ~19 rows gathered into slices of at most 60
            assert all(s.height <= 60 for s in slices)
        assert spill.head(5).equals(whole.head(5))  # the first rows in delivery order
    finally:
        folder = spill.folder
        spill.close()
    assert folder is None or not folder.exists()
    assert spill.head(3).equals(whole.head(3))  # kept for the step's preview once the rows are let go


@pytest.mark.parametrize("memory_rows", [10_000, 50], ids=["in-memory", "spilled"])
def test_records_left_out_are_in_no_read(memory_rows: int) -> None:
    pages = _pages(200, 50)
    whole = pl.concat(pages)
    spill = _filled(pages, memory_rows)
    gone = whole.filter(pl.col("_row_no") % 3 == 1)
    spill.leave_out(gone.select("_source", "_row_no", *KEY))  # the key as parsed: which bucket to look in
    kept = whole.join(gone, on="_row_no", how="anti")
    try:
        assert spill.height == kept.height and spill.rows == 200
        assert pl.concat(list(spill.pages())).sort("_row_no").equals(kept)
        assert pl.concat(list(spill.slices(40))).sort("_row_no").equals(kept)
        assert spill.head(4).equals(kept.head(4))
    finally:
        spill.close()


def test_an_empty_delivery_is_one_empty_slice_and_no_page() -> None:
    spill = _filled([_pages(1, 1)[0].clear()], 10)
    assert spill.height == 0 and list(spill.pages()) == []
    (only,) = list(spill.slices(10))
    assert only.height == 0 and only.columns == ["_row_no", "_source", "k", "v"]
    assert spill.head(FIRST_ROWS).height == 0
    spill.close()


def test_a_detached_frame_has_the_values_and_types_of_the_frame() -> None:
    """What the 标准层 keeps of a slice is copied through Arrow's plain text (values, types and nulls
    as they were), so it holds none of the slice's buffers."""
    import datetime as dt

    from guiji.spill import detached

    big = pl.DataFrame({"t": [f"值{i}" * (i % 4) if i % 5 else None for i in range(1000)],
                        "n": list(range(1000)), "d": [dt.date(2026, 1, 1 + i % 28) for i in range(1000)],
                        "c": pl.Series(["甲", "乙"] * 500, dtype=pl.Categorical)})
    small = big.filter(pl.col("n") % 97 == 0)
    out = detached(small)
    assert out.schema == small.schema and out.equals(small)
    assert detached(big.clear()).schema == big.schema


def test_a_spill_deletes_the_folders_this_hosts_killed_steps_left_and_no_other(tmp_path, monkeypatch) -> None:
    import subprocess
    import sys

    import guiji.spill as spill_mod

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(spill_mod.tempfile, "tempdir", None)  # TMPDIR read again
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    dead = int(ended.stdout)  # a process that has ended: its folder is what a killed step leaves
    host = spill_mod._host()
    left = tmp_path / f"gongshu_spill_{host}_{dead}_x1"
    running = tmp_path / f"gongshu_spill_{host}_{os.getpid()}_x2"  # a step of this host still spilling
    other = tmp_path / f"gongshu_spill_{host}x_{dead}_x3"  # another host's, on a shared TMPDIR
    unrelated = tmp_path / "gongshu_spill_notes"
    for folder in (left, running, other, unrelated):
        folder.mkdir()
        (folder / "0.arrow").write_bytes(b"rows")
    spill = _filled(_pages(300, 64), 50)
    try:
        assert spill.spilled and spill.folder is not None and spill.folder.parent == tmp_path
        assert spill.folder.name.startswith(f"gongshu_spill_{host}_{os.getpid()}_")
        assert not left.exists()
        assert running.exists() and other.exists() and unrelated.exists()
    finally:
        spill.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (running, other, unrelated))
