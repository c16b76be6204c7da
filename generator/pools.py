"""Small value pools filled once with Faker (zh_CN); rows are then sampled from them with numpy.

Faker is called a few thousand times in total, whatever ``--persons`` is. Every pool keeps only
texts that every delivery encoding of the catalogue can carry (GBK files must really encode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from faker import Faker
from faker.providers.company.zh_CN import Provider as CompanyProvider
from faker.providers.person.zh_CN import Provider as PersonProvider

from generator.config import PoolSpec


def _encodable(values: list[str], encodings: set[str]) -> list[str]:
    out = []
    for v in values:
        try:
            for enc in encodings:
                v.encode(enc)
        except UnicodeEncodeError:
            continue
        out.append(v)
    return out


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


@dataclass(frozen=True)
class Pools:
    """Texts to sample from; ``surname_p`` are the surname frequencies Faker ships."""

    surnames: pl.Series
    surname_p: np.ndarray
    given: pl.Series
    org_marks: pl.Series  # 字号 (trade names)
    org_industries: pl.Series
    org_suffixes: pl.Series
    roads: pl.Series
    words: pl.Series
    email_domains: pl.Series


def build_pools(seed: int, spec: PoolSpec, encodings: set[str]) -> Pools:
    """Fill every pool from a Faker seeded with ``seed``."""
    fake = Faker("zh_CN")
    fake.seed_instance(seed)
    enc = encodings | {"utf-8"}
    last = PersonProvider.last_names
    surnames = _encodable(list(last), enc)
    weights = np.array([float(last[s]) for s in surnames])
    given = _unique(_encodable(
        list(PersonProvider.first_names) + list(getattr(PersonProvider, "first_names_male", []))
        + list(getattr(PersonProvider, "first_names_female", [])), enc))
    # Trade names: Faker's company prefixes plus two-character marks built from their characters,
    # so that 100k companies do not share a handful of names.
    prefixes = _encodable(list(CompanyProvider.company_prefixes), enc)
    chars = sorted({c for p in prefixes + given for c in p})
    rng = np.random.default_rng(seed)
    marks = [chars[a] + chars[b] for a, b in rng.integers(0, len(chars), (4000, 2)) if a != b]
    roads = _unique(_encodable([fake.street_name() for _ in range(spec.roads * 4)], enc))[: spec.roads]
    words = _unique(_encodable([fake.word() for _ in range(600)], enc))
    domains = _unique([fake.free_email_domain() for _ in range(50)])
    return Pools(
        surnames=pl.Series(surnames, dtype=pl.String),
        surname_p=weights / weights.sum(),
        given=pl.Series(given, dtype=pl.String),
        org_marks=pl.Series(_unique(prefixes + marks), dtype=pl.String),
        org_industries=pl.Series(_encodable(spec.org_industries, enc), dtype=pl.String),
        org_suffixes=pl.Series(_encodable(spec.org_suffixes, enc), dtype=pl.String),
        roads=pl.Series(roads, dtype=pl.String),
        words=pl.Series(words, dtype=pl.String),
        email_domains=pl.Series(domains, dtype=pl.String),
    )


def pick(pool: pl.Series, rng: np.random.Generator, n: int, p: np.ndarray | None = None) -> pl.Series:
    """``n`` values sampled with replacement (gathering shares the pool's string buffers)."""
    idx = rng.choice(len(pool), size=n, p=p) if p is not None else rng.integers(0, len(pool), n)
    return pool.gather(idx)


def person_names(pools: Pools, rng: np.random.Generator, n: int) -> pl.Series:
    """Surname (by Faker's frequencies) + given name."""
    return pick(pools.surnames, rng, n, pools.surname_p) + pick(pools.given, rng, n)


def org_names(pools: Pools, rng: np.random.Generator, n: int, prefix: str) -> pl.Series:
    """``<city>`` + 字号 + 行业 + 组织形式, e.g. 瓯江和泰科技有限公司."""
    return (prefix + pick(pools.org_marks, rng, n) + pick(pools.org_industries, rng, n)
            + pick(pools.org_suffixes, rng, n))
