"""Benchmark: the synthetic-data generator on the demo catalogue (or ``--catalog``).

    python benchmarks/bench_generator.py --persons 1000000 [--days 2] [--seed 7] [--out DIR] [--keep]

Prints seconds per stage (pools, each entity pool, each resource's deliveries, the manifest), the
total, persons/s, rows written, bytes on disk and peak RSS. Writes into a temporary folder that is
removed afterwards unless ``--out``/``--keep`` is given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource as rusage
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from catalog.loader import DEMO_CATALOGUE, load_catalogue  # noqa: E402
from generator import generate_timed  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--persons", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=20261121)
    p.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 21))
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--catalog", type=Path, default=DEMO_CATALOGUE)
    p.add_argument("--out", type=Path, default=None, help="landing folder (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the temporary landing folder")
    p.add_argument("--progress", action="store_true", help="show the tqdm bar")
    args = p.parse_args(argv)

    catalogue = load_catalogue(args.catalog)
    out = args.out or Path(tempfile.mkdtemp(prefix="gongshu_bench_"))
    start = time.perf_counter()
    try:
        result = generate_timed(catalogue, persons=args.persons, seed=args.seed, date=args.date, out=out,
                                days=args.days, progress=args.progress)
        total = time.perf_counter() - start
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    finally:
        if args.out is None and not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(f"生成器基准 · {args.persons:,} 人 · {args.days} 天 · 种子 {args.seed} · {catalogue.city.city.name}")
    width = max(len(k) for k in result.seconds)
    for stage, seconds in result.seconds.items():
        print(f"  {stage:<{width}}  {seconds:8.2f} s")
    print(f"  {'合计':<{width}}  {total:8.2f} s")
    print(f"persons/s: {args.persons / total:,.0f}")
    print(f"rows written: {result.rows:,} ({result.rows / total:,.0f} rows/s), {size / 2**20:,.1f} MiB on disk")
    print(f"peak RSS: {rusage.getrusage(rusage.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    if args.out is not None or args.keep:
        print(f"landing: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
