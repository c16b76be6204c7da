"""Trace accuracy on leaks of the extracts a city has written (after ``make demo``): for each
application's latest extract, 100 leaks of 100–500 sampled rows, each column kept with probability
0.6 (the key-id column always dropped; the token column too unless --keep-tokens), shuffled and
renamed; each traced as ``gongshu share trace`` does (without recording it in the audit). The
warehouse, catalogue and key come from the environment as for ``gongshu`` (``assets.resources``);
without ``GONGSHU_PSEUDONYM_KEY`` the demo key in the home folder.

    .venv/bin/python benchmarks/share_trace_accuracy.py [--home .gongshu] [--leaks 100] [--keep-tokens]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from dagster import build_resources

from assets.resources import VARIABLES, resources_from_env, settings_from_env
from catalog.loader import load_catalogue
from desensitize.pseudonym import PseudonymKey
from sharing import store
from sharing.trace import trace_file


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", help="home folder (default: GONGSHU_HOME, else assets.resources.DEFAULT_HOME)")
    p.add_argument("--leaks", type=int, default=100)
    p.add_argument("--keep-tokens", action="store_true")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    if args.home:
        os.environ[VARIABLES["home"]] = args.home
    settings = settings_from_env()
    with build_resources(resources_from_env(settings=settings)) as r:
        key = r.pseudonym.get_or_none() or PseudonymKey.from_secret(
            (settings.home_path / "demo-pseudonym.key").read_text().strip(), settings.pseudonym_algorithm)
        return trace_leaks(r.warehouse.get(), load_catalogue(settings.catalogue_path), key, args)


def trace_leaks(wh, cat, key: PseudonymKey, args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    tmp = Path(tempfile.mkdtemp())
    extracts = store.read_extracts(wh).filter(pl.col("leaks") == 0).sort("at").unique("application_id", keep="last")
    print(f"{'申请':<20}{'识别正确':>8}{'误认':>6}{'未识别':>8}")
    for x in extracts.sort("application_id").iter_rows(named=True):
        frame = pl.read_csv(Path(x["folder"]) / f"{x['application_id']}.csv", infer_schema=False)
        drop = {"_key_id"} | (set() if args.keep_tokens else {c for c in frame.columns if c.endswith("__token")})
        ok = wrong = none = 0
        for i in range(args.leaks):
            rows = frame.sample(min(frame.height, int(rng.integers(100, 501))), seed=int(rng.integers(1 << 31)))
            cols = [c for c in rows.columns if c not in drop]
            kept = [c for c in cols if rng.random() < 0.6] or [cols[int(rng.integers(len(cols)))]]
            kept = list(rng.permutation(kept))
            path = tmp / f"leak{i}.csv"
            rows.select(kept).rename({c: f"c{j}" for j, c in enumerate(kept)}).write_csv(path)
            t = trace_file(wh, path, key, catalogue=cat, record=False)
            found = t.application["application_id"] if t.application else None
            ok += found == x["application_id"]
            wrong += found not in (None, x["application_id"])
            none += found is None
        print(f"{x['application_id']:<20}{ok:>8}{wrong:>6}{none:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
