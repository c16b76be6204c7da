"""Benchmark: masking rules on 1,000,000 rows, one core.

    python benchmarks/bench_masking.py [--rows 1000000] [--threads 1] [--repeat 3]

Prints rows/s per rule (best of ``--repeat``), including keyed pseudonymisation (HMAC-SHA256 and SM3
over distinct values) and format-preserving ID tokens, then whole policies (the demo city's
person_restricted and person_open, the latter with k-anonymity). Polars is pinned to ``--threads``
threads (default 1) before it is imported, so the figures are per core. Target: ≥ 1,000,000 rows/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET = 1_000_000


def synthetic_people(n: int, seed: int = 20261121):
    """A person-library snapshot with distinct valid ID numbers, vectorised (numpy)."""
    import datetime as dt

    import numpy as np
    import polars as pl

    from catalog.identifiers import id_check_chars_np

    rng = np.random.default_rng(seed)
    wanted, n = n, n + n // 50  # a few spare rows: duplicates are dropped below (a base key is unique)
    regions = np.array(["339902", "339903", "339904", "339905", "339921", "339981", "330302", "330303"])
    birth = (np.datetime64("1930-01-01") + rng.integers(0, 365 * 90, n)).astype("datetime64[D]")
    # distinct IDs: sequence numbers drawn without collision inside each (region, birth date)
    seq = (np.arange(n) % 1000 + rng.integers(0, 1000, n)) % 1000
    region = regions[rng.integers(0, regions.size, n)]
    ymd = np.char.replace(birth.astype(str), "-", "")
    body = np.char.add(np.char.add(region, ymd), np.char.zfill(seq.astype(str), 3))
    digits = np.frombuffer(body.astype("S17").tobytes(), dtype=np.uint8).reshape(n, 17) - 48
    ids = np.char.add(body, id_check_chars_np(digits))
    surnames = np.array(list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"))
    given = np.array(list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏辉玲建国志文斌波宇浩凯健俊帆帅旭宁"))
    names = np.char.add(np.char.add(surnames[rng.integers(0, surnames.size, n)], given[rng.integers(0, given.size, n)]),
                        np.where(rng.random(n) < 0.6, given[rng.integers(0, given.size, n)], ""))
    mobiles = np.char.add("1", np.char.zfill(rng.integers(3_000_000_000, 9_999_999_999, n).astype(str), 10))
    districts = np.array(["江心区", "鹿鸣区", "瓯海区", "龙湾区", "永宁县", "瑞安市"])
    streets = np.array(["五马街道", "松台街道", "南郊街道", "蒲鞋市街道", "梧田街道", "安阳街道"])
    roads = np.array(["解放路", "人民路", "学院路", "车站大道", "府前街", "江滨路"])
    addresses = np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(
        "浙江省瓯江市", districts[rng.integers(0, districts.size, n)]), streets[rng.integers(0, streets.size, n)]),
        roads[rng.integers(0, roads.size, n)]), rng.integers(1, 400, n).astype(str)), "号")
    frame = pl.DataFrame({
        "id_number": ids,
        "name": names,
        "gender": np.where(seq % 2 == 1, "1", "2"),
        "birth_date": birth.astype("datetime64[D]"),
        "ethnicity": np.where(rng.random(n) < 0.95, "01", np.char.zfill(rng.integers(2, 57, n).astype(str), 2)),
        "household_address": addresses,
        "marital_status": np.array(["10", "20", "21", "22"])[rng.integers(0, 4, n)],
        "mobile": mobiles,
        "insurance_status": np.array(["1", "2", "3"])[rng.integers(0, 3, n)],
        "birth_cert_no": np.char.add("A", np.char.zfill(rng.integers(0, 10**9, n).astype(str), 9)),
        "landline": np.char.add("0577-", rng.integers(10_000_000, 99_999_999, n).astype(str)),
        "email": np.char.add(np.char.add("user", rng.integers(0, 10**7, n).astype(str)), "@example.cn"),
        "longitude": 120.5 + rng.random(n) * 0.3,
        "valid_from": dt.date(2026, 10, 9),
    }).with_columns(pl.col("birth_date").cast(pl.Date))
    return frame.unique(subset="id_number", keep="first", maintain_order=True).head(wanted)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ["POLARS_MAX_THREADS"] = str(args.threads)

    import datetime as dt

    import polars as pl

    from catalog.loader import DEMO_CATALOGUE, load_catalogue
    from desensitize import rules
    from desensitize.fpe import fpe_id_tokens
    from desensitize.masking import mask_snapshot
    from desensitize.policy import share_policies
    from desensitize.pseudonym import PseudonymKey, hmac_tokens

    t = time.perf_counter()
    people = synthetic_people(args.rows)
    print(f"{args.rows:,} synthetic persons in {time.perf_counter() - t:.1f} s; polars threads: {pl.thread_pool_size()}")
    key = PseudonymKey(b"benchmark-key-not-a-secret-0123")
    sm3 = PseudonymKey(key.secret, "sm3")
    as_of = dt.date(2026, 10, 9)
    c = pl.col

    cases = [
        ("keep_first_last(6, 4)  公民身份号码", lambda: people.select(rules.keep_first_last(c("id_number"), 6, 4))),
        ("keep_first(1)          姓名", lambda: people.select(rules.keep_first(c("name")))),
        ("mask_phone             手机号码", lambda: people.select(rules.mask_phone(c("mobile")))),
        ("mask_phone             固定电话", lambda: people.select(rules.mask_phone(c("landline")))),
        ("mask_email             电子邮箱", lambda: people.select(rules.mask_email(c("email")))),
        ("keep_address(district) 地址", lambda: people.select(rules.keep_address(c("household_address")))),
        ("to_district            地址(开放)", lambda: people.select(rules.to_level(c("household_address")))),
        ("birth_year             出生日期", lambda: people.select(rules.birth_year(c("birth_date")))),
        ("age_band(5)            出生日期", lambda: people.select(rules.age_band(c("birth_date"), as_of))),
        ("grid(0.1)              经度", lambda: people.select(rules.grid(c("longitude"), 0.1))),
        ("redact                 出生证明编号", lambda: people.select(rules.redact(c("birth_cert_no")))),
        ("HMAC-SHA256 token      公民身份号码", lambda: hmac_tokens(people.get_column("id_number"), key)),
        ("HMAC-SHA256 token      婚姻状况(4 distinct)", lambda: hmac_tokens(people.get_column("marital_status"), key)),
        ("HMAC-SM3 token         公民身份号码", lambda: hmac_tokens(people.get_column("id_number"), sm3)),
        ("fpe_id(year)           公民身份号码", lambda: fpe_id_tokens(people.get_column("id_number"), key)),
    ]
    policies = {p.name: p for p in share_policies(load_catalogue(DEMO_CATALOGUE))}
    lib = policies["person_restricted"].library
    snapshot = people.select([e.code for e in lib.elements] + ["valid_from"])
    for name in ("person_restricted", "person_open"):
        cases.append((f"policy {name:<16s} (all columns)",
                      lambda name=name: mask_snapshot(policies[name], snapshot, as_of=as_of, key=key)))

    print(f"\n{'rule':48s} {'seconds':>8s} {'rows/s':>14s}  target {TARGET:,}/s")
    for label, fn in cases:
        best = min(_timed(fn) for _ in range(args.repeat))
        rate = args.rows / best
        print(f"{label:48s} {best:8.3f} {rate:14,.0f}  {'ok' if rate >= TARGET else 'below'}")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
