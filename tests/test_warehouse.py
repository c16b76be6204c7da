"""Warehouse bulk I/O on SQLite and PostgreSQL: what goes in comes back, value for value."""

from __future__ import annotations

import datetime as dt
import threading

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


def test_a_table_read_in_pages_is_the_table_read_at_once(warehouse: Warehouse) -> None:
    """One pass, a page of rows at a time (the leak scan's read): the pages put together are the
    whole read — values that CSV must escape, NULLs and line breaks included — and an empty result
    is one empty page."""
    table = warehouse.table("audit", "paged", columns_of(SCHEMA), primary_key=["k"])
    frame = _frame()
    with warehouse.begin() as conn:
        warehouse.create(conn, table)
        warehouse.insert(conn, table, frame)
    query = f"SELECT {', '.join(SCHEMA)} FROM {warehouse._name(table)}"
    with warehouse.engine.connect() as conn:
        for rows in (1, 3, 4, 10):
            for bulk in (False, True):  # bulk: ADBC's record batches on PostgreSQL
                pages = list(warehouse.read_pages(conn, query, SCHEMA, rows, bulk=bulk))
                assert [p.height for p in pages] == [min(rows, 4 - i) for i in range(0, 4, rows)]
                assert pl.concat(pages).sort("k").equals(frame)
        (whole,) = warehouse.read_pages(conn, query, SCHEMA, None)  # what read() returns: one frame
        assert whole.sort("k").equals(frame)
        for bulk in (False, True):
            empty = list(warehouse.read_pages(conn, f"{query} WHERE k > 99", SCHEMA, 2, bulk=bulk))
            assert len(empty) == 1 and empty[0].height == 0 and empty[0].schema == frame.schema
        if warehouse.is_postgres:  # ~30 MB: ADBC hands it over in several record batches, gathered into pages
            many = "SELECT g AS k, repeat('值', 20) || g AS v FROM generate_series(1, 400000) g ORDER BY g"
            schema = {"k": pl.Int64(), "v": pl.String()}
            pages = list(warehouse.read_pages(conn, many, schema, 150_000, bulk=True))
            assert [p.height for p in pages] == [150_000, 150_000, 100_000]
            assert pl.concat(pages).equals(warehouse.read(conn, many, schema))


def test_pages_inserted_in_one_copy_are_the_frame_inserted_at_once(warehouse: Warehouse, monkeypatch) -> None:
    """A batch's ODS rows go in as pages (a spilled batch a key bucket at a time) through one COPY: the
    table holds what one insert of all of them holds, empty pages and a page larger than a COPY block
    included; no page at all inserts nothing."""
    import warehouse.store as store

    monkeypatch.setattr(store, "_COPY_CHUNK_ROWS", 2)  # a page of 3 rows is two COPY blocks
    table = warehouse.table("audit", "pages", columns_of(SCHEMA))
    frame = _frame()
    with warehouse.begin() as conn:
        warehouse.create(conn, table)
        assert warehouse.insert_pages(conn, table, []) == 0
        assert warehouse.insert_pages(conn, table, [frame.clear(), frame.head(3), frame.clear(), frame.slice(3)]) \
            == frame.height
    assert _read_all(warehouse, table).sort("k").equals(frame.sort("k"))


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
        warehouse.insert(conn, table, pl.DataFrame({"k": [1, 2, 3], "text": [None, "a\x00b", "c"]}))
        back = conn.execute(sa.text(f"SELECT text FROM {warehouse._name(table)} ORDER BY k")).scalars().all()
    assert back == [None, "ab" if warehouse.is_postgres else "a\x00b", "c"]
    clean = pl.DataFrame({"k": [1, 2], "text": [None, "c"]})
    assert warehouse.stored(clean) is clean  # nothing to drop: the frame as it is, not a rewritten copy


def test_binary_copy_maps_the_declared_types_and_refuses_others() -> None:
    assert wire_type(sa.BigInteger()) == pl.Int64 and wire_type(sa.Integer()) == pl.Int32
    assert wire_type(sa.Double()) == pl.Float64 and wire_type(sa.Text()) == pl.String
    assert wire_type(sa.DateTime()) == pl.Datetime("us") and wire_type(sa.Date()) == pl.Date
    with pytest.raises(TypeError, match="LargeBinary"):
        wire_type(sa.LargeBinary())
    with pytest.raises(TypeError):
        wire_type(sa.DateTime(timezone=True))


def test_two_transactions_creating_the_same_table_at_once_both_succeed(warehouse_url: str) -> None:
    """Steps run in parallel: on a new warehouse two transactions may create the same schema and
    table at once. The second waits for the first to commit and then finds the table; on
    PostgreSQL, CREATE … IF NOT EXISTS alone fails it on the system catalogue's unique index."""
    first, second = Warehouse(warehouse_url), Warehouse(warehouse_url)
    cols = [Column("k", pl.Int64()), Column("v", pl.String())]
    created, go_on = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def create_and_hold() -> None:
        try:
            with first.begin() as conn:
                first.create(conn, first.table("quality", "shared", cols, primary_key=["k"]))
                first.insert(conn, first.table("quality", "shared"), pl.DataFrame({"k": [1], "v": ["a"]}))
                created.set()
                go_on.wait(10)  # the second transaction's CREATE starts while this one is open
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            created.set()

    holder = threading.Thread(target=create_and_hold)
    holder.start()
    assert created.wait(10)

    def create_too() -> None:
        try:
            with second.begin() as conn:
                second.create(conn, second.table("quality", "shared", cols, primary_key=["k"]))
                second.insert(conn, second.table("quality", "shared"), pl.DataFrame({"k": [2], "v": ["b"]}))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    creator = threading.Thread(target=create_too)
    creator.start()
    creator.join(0.5)
    assert creator.is_alive()  # waits for the first transaction, which created the table and is still open
    go_on.set()
    holder.join(10)
    creator.join(10)
    try:
        assert not errors, errors
        with first.engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT k, v FROM {first.qualified('quality', 'shared')} ORDER BY k")).all()
        assert [tuple(r) for r in rows] == [(1, "a"), (2, "b")]
    finally:
        first.dispose()
        second.dispose()


def test_a_sqlite_connection_opened_during_another_steps_first_write_waits_for_it(tmp_path) -> None:
    """A new SQLite warehouse is switched to WAL by the first connection that can; one opened while
    a parallel step's first transaction holds the file waits for it ("database is locked" at once
    was what SQLite answered)."""
    import sqlite3

    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    wh = Warehouse(f"sqlite:///{path}")
    outcome: list = []

    def connect() -> None:
        try:
            with wh.engine.connect() as conn:
                outcome.append(conn.exec_driver_sql("PRAGMA journal_mode").scalar())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)

    opener = threading.Thread(target=connect)
    opener.start()
    opener.join(0.3)
    try:
        assert opener.is_alive() and not outcome  # waiting, not failed
        holder.execute("COMMIT")
        opener.join(10)
        assert outcome == ["wal"]
    finally:
        holder.close()
        wh.dispose()


@pytest.mark.postgres
def test_transactions_creating_different_tables_do_not_wait_on_each_other(pg_url: str) -> None:
    """Only creators of the same object take turns: a step creating its own table goes on while
    another step's transaction, which created a different one, is still open (on SQLite every
    writer waits for the database lock instead)."""
    first, second = Warehouse(pg_url), Warehouse(pg_url)
    cols = [Column("k", pl.Int64())]
    try:
        with first.begin() as conn:
            first.create(conn, first.table("quality", "one", cols))  # the schema, committed
        with first.begin() as holding:
            first.create(holding, first.table("quality", "two", cols))
            done = threading.Event()

            def create_other() -> None:
                with second.begin() as conn:
                    second.create(conn, second.table("quality", "three", cols))
                done.set()

            other = threading.Thread(target=create_other)
            other.start()
            assert done.wait(10)  # finished while "two" is still uncommitted
            other.join(10)
        assert second.exists("quality", "two") and second.exists("quality", "three")
    finally:
        first.dispose()
        second.dispose()


def test_a_failed_statement_names_no_identifier(warehouse: Warehouse) -> None:
    """A key violation's message (PostgreSQL's ``DETAIL: Key …=(…)``, SQLAlchemy's ``[parameters: …]``)
    reaches the Dagster event log when a step fails: it names the table and the constraint, never the
    ID number or the mobile number that violated it."""
    from catalog.identifiers import REDACTED

    person, mobile = "33010219900101123X", "13912345678"
    table = warehouse.table("audit", "redacted", [Column("id_number", pl.String()), Column("mobile", pl.String())],
                            primary_key=["id_number"])
    frame = pl.DataFrame({"id_number": [person], "mobile": [mobile]})
    with warehouse.begin() as conn:
        warehouse.create(conn, table)
        warehouse.insert(conn, table, frame)
    failures = []
    for attempt in (
        lambda conn: warehouse.insert(conn, table, frame),  # COPY on PostgreSQL, executemany on SQLite
        lambda conn: conn.execute(sa.text(f"INSERT INTO {warehouse._name(table)} VALUES (:i, :m)"),
                                  {"i": person, "m": mobile}),
    ):
        with pytest.raises(Exception) as raised, warehouse.begin() as conn:  # noqa: PT011 (any driver's error)
            attempt(conn)
        failures.append(raised.value)
    for exc in failures:
        chain, seen = [], exc
        while seen is not None:  # what Dagster serialises: the error and its causes
            chain.append(str(seen))
            seen = seen.__cause__ or seen.__context__
        text = "\n".join(chain)
        assert person not in text and mobile not in text, text
        assert "redacted" in text or "UNIQUE" in text or "unique" in text, text
    if warehouse.is_postgres:
        assert REDACTED in str(failures[1])  # the DETAIL line stays, without the value
