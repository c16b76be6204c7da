"""Warehouse bulk I/O on SQLite and PostgreSQL: what goes in comes back, value for value."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
import sqlalchemy as sa

from warehouse.store import Column, Warehouse, columns_of, wire_type

SCHEMA: dict[str, pl.DataType] = {
    "k": pl.Int64(),
    "text": pl.String(),
    "n": pl.Int64(),
    "x": pl.Float64(),
    "flag": pl.Boolean(),
    "day": pl.Date(),
    "at": pl.Datetime("us"),
}


def _frame() -> pl.DataFrame:
    return pl.DataFrame({
        "k": [1, 2, 3, 4],
        # what CSV text would have to escape or could confuse with NULL: quotes, separators,
        # line breaks, a backslash-N, the empty string, CJK and a 4-byte character
        "text": ['他说"你好",然后\n走了', "", None, "\\N;\t𠀀"],
        "n": [-(2**62), 0, None, 2**62],
        "x": [1.5, -0.0, None, 1e300],
        "flag": [True, False, None, True],
        "day": [dt.date(1900, 1, 1), dt.date(2026, 11, 20), None, dt.date(9999, 12, 31)],
        "at": [dt.datetime(2026, 11, 20, 2, 0, 0, 123456), None, dt.datetime(1970, 1, 1), dt.datetime(2038, 1, 19, 3, 14, 8)],
    }, schema=SCHEMA)


def _read_all(wh: Warehouse, table: sa.Table) -> pl.DataFrame:
    with wh.engine.connect() as conn:
        return wh.read(conn, f"SELECT {', '.join(SCHEMA)} FROM {wh._name(table)} ORDER BY k", SCHEMA).sort("k")


def test_every_declared_type_round_trips(warehouse: Warehouse) -> None:
    table = warehouse.table("audit", "round_trip", columns_of(SCHEMA), primary_key=["k"])
    frame = _frame()
    with warehouse.begin() as conn:
        warehouse.create(conn, table)
        assert warehouse.insert(conn, table, frame.reverse()) == frame.height
    assert _read_all(warehouse, table).equals(frame)


def test_frames_are_sent_in_the_columns_types(warehouse: Warehouse) -> None:
    """A frame whose dtypes differ from the table's (narrower integers, nanosecond or zoned
    timestamps, a subset of the columns) is stored as the table declares it."""
    table = warehouse.table("audit", "narrow", [Column("k", pl.Int64()), Column("n", pl.Int64()),
                                                Column("at", pl.Datetime("us")), Column("text", pl.String())])
    frame = pl.DataFrame({
        "k": pl.Series([1, 2], dtype=pl.Int32),
        "n": pl.Series([7, None], dtype=pl.UInt8),
        "at": pl.Series([dt.datetime(2026, 11, 20, 10), dt.datetime(2026, 11, 21)], dtype=pl.Datetime("ns"))
        .dt.replace_time_zone("Asia/Shanghai"),  # city time, stored as UTC
    })
    with warehouse.begin() as conn:
        warehouse.create(conn, table)
        warehouse.insert(conn, table, frame)
    schema = {"k": pl.Int64(), "n": pl.Int64(), "at": pl.Datetime("us"), "text": pl.String()}
    with warehouse.engine.connect() as conn:
        back = warehouse.read(conn, f"SELECT k, n, at, text FROM {warehouse._name(table)} ORDER BY k", schema)
    assert back.rows() == [(1, 7, dt.datetime(2026, 11, 20, 2), None), (2, None, dt.datetime(2026, 11, 20, 16), None)]


def test_a_nul_byte_is_dropped_on_postgresql_and_kept_on_sqlite(warehouse: Warehouse) -> None:
    table = warehouse.table("audit", "nul", [Column("k", pl.Int64()), Column("text", pl.String())])
    with warehouse.begin() as conn:
        warehouse.create(conn, table)
        warehouse.insert(conn, table, pl.DataFrame({"k": [1], "text": ["a\x00b"]}))
        back = conn.execute(sa.text(f"SELECT text FROM {warehouse._name(table)}")).scalar()
    assert back == ("ab" if warehouse.is_postgres else "a\x00b")


def test_binary_copy_maps_the_declared_types_and_refuses_others() -> None:
    assert wire_type(sa.BigInteger()) == pl.Int64 and wire_type(sa.Integer()) == pl.Int32
    assert wire_type(sa.Double()) == pl.Float64 and wire_type(sa.Text()) == pl.String
    assert wire_type(sa.DateTime()) == pl.Datetime("us") and wire_type(sa.Date()) == pl.Date
    with pytest.raises(TypeError, match="LargeBinary"):
        wire_type(sa.LargeBinary())
    with pytest.raises(TypeError):
        wire_type(sa.DateTime(timezone=True))
