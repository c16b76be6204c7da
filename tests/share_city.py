"""A demo-catalogue 人口库 written straight into base.person (real storage), for the share workflow's
extract and trace tests: N persons with valid ID numbers, names, mobiles and codes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl

from catalog.loader import Catalogue, load_catalogue
from tests.citykit import id_number
from warehouse.base import base_schema
from warehouse.store import Column, Warehouse

DEMO = Path(__file__).resolve().parent.parent / "catalog" / "demo"
SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏飞宇浩然子轩梓涵欣怡诗琪思远博文")


def persons(n: int, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    days = rng.integers(0, 60 * 365, n)
    births = [(dt.date(1950, 1, 1) + dt.timedelta(days=int(d))) for d in days]
    seqs = rng.integers(1, 999, n)
    ids = [id_number("339902", b.strftime("%Y%m%d"), int(s)) for b, s in zip(births, seqs, strict=True)]
    names = ["".join([SURNAMES[rng.integers(len(SURNAMES))]] + [GIVEN[rng.integers(len(GIVEN))]
                                                                for _ in range(int(rng.integers(1, 3)))])
             for _ in range(n)]
    mobiles = [f"1{rng.choice([3, 5, 7, 8, 9])}{int(rng.integers(0, 10**9)):09d}" for _ in range(n)]
    genders = [str(2 - int(i[16]) % 2) for i in ids]
    return pl.DataFrame({"id_number": ids, "name": names, "gender": genders, "birth_date": births,
                         "mobile": mobiles, "insurance_status": rng.choice(["1", "2"], n).tolist()}).unique("id_number")


def write_base(wh: Warehouse, cat: Catalogue, people: pl.DataFrame, since: dt.date) -> None:
    lib = cat.library("person")
    schema = base_schema(lib)
    t = wh.table("base", "person", [Column(c, d) for c, d in schema.items()])
    frame = people.with_columns(pl.lit(since).alias("valid_from"))
    frame = frame.select([pl.col(c).cast(d) if c in frame.columns else pl.lit(None, d).alias(c) for c, d in schema.items()])
    with wh.begin() as conn:
        wh.create(conn, t)
        wh.insert(conn, t, frame)


def demo_catalogue() -> Catalogue:
    return load_catalogue(DEMO)
