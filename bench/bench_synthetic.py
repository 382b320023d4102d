"""Benchmark: the synthetic generator at full size (target: 2000 days at 156x132 < 60 s on 2 cores).

Usage: ``python bench/bench_synthetic.py [--days 2000] [--height 156] [--width 132] [--factor 12]``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from precipgen.data.synthetic import generate, oracle_sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--days", type=int, default=2000)
    ap.add_argument("--height", type=int, default=156)
    ap.add_argument("--width", type=int, default=132)
    ap.add_argument("--factor", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--oracle_samples", type=int, default=4, help="oracle draws to time (0: skip)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    data = generate(args.days, args.height, args.width, args.factor, seed=args.seed)
    elapsed = time.perf_counter() - t0
    land = data.statics[data.static_names.index("land_sea_mask")] > 0.5
    y = data.Y_hr[:, 0][:, land]
    wet = y[y > 0.1]
    print(
        f"generate: {args.days} days at {args.height}x{args.width} (factor {args.factor}) in "
        f"{elapsed:.2f} s = {args.days / elapsed:.0f} days/s on {os.cpu_count()} CPUs"
    )
    print(
        f"land: wet fraction {(y > 0.1).mean():.3f}, wet mean {wet.mean():.2f} mm/day, "
        f"P95 {np.percentile(wet, 95):.1f}, P99 {np.percentile(wet, 99):.1f}, max {y.max():.1f}"
    )
    if args.oracle_samples:
        t0 = time.perf_counter()
        oracle_sample(data.params, data.X_lr, data.statics, args.oracle_samples, seed=1)
        dt = time.perf_counter() - t0
        n = args.oracle_samples * args.days
        print(f"oracle_sample: {n} day-draws in {dt:.2f} s = {n / dt:.0f} day-draws/s")


if __name__ == "__main__":
    main()
