"""Benchmark: CRPS loss forward+backward (ours, torch) vs scoringrules' forward (numpy backend).

Field (m, 4, 156, 132) float32, m = 8, 20, 50 by default, same data for both in the same run.
Time: median of ``--repeats`` runs in this process. Peak memory: a fresh subprocess per
(implementation, m) measures the RSS high-water mark (VmHWM, reset after the data is made)
minus the RSS just before the call, so torch's and numpy's allocations are both seen.

    .venv/bin/python bench/bench_crps.py [--ms 8 20 50] [--repeats 11] [--threads 1]

Timings are interleaved across implementations (fair under background load); ``sr pwm`` is
scoringrules' sorted-form estimator, shown for reference (same value as ``fair``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import psutil
import scoringrules as sr
import torch

from precipgen.scores.crps import crps_loss

FIELD = (4, 156, 132)
KIND_TO_SR = {"fair": "fair", "standard": "nrg"}


def make_data(m: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Precipitation-like float32 data: ~60% exact zeros, the rest gamma."""
    g = torch.Generator().manual_seed(seed)
    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        wet = torch.distributions.Gamma(0.8, 1 / 3.0).sample(shape)
        return torch.where(torch.rand(shape, generator=g) < 0.6, 0.0, wet).float()
    torch.manual_seed(seed)
    return draw((m, *FIELD)), draw(FIELD)


def ours_step(ens: torch.Tensor, obs: torch.Tensor, kind: str) -> Callable[[], None]:
    leaf = ens.clone().requires_grad_(True)

    def step() -> None:
        leaf.grad = None
        crps_loss(leaf, obs, kind=kind).backward()
    return step


def sr_step(ens: torch.Tensor, obs: torch.Tensor, estimator: str) -> Callable[[], None]:
    ens_np, obs_np = ens.numpy(), obs.numpy()

    def step() -> None:
        sr.crps_ensemble(obs_np, ens_np, m_axis=0, estimator=estimator, backend="numpy").mean()
    return step


def median_seconds(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median wall time of each callable; the repeats are interleaved (a, b, c, a, b, c, ...)
    so that load from other processes hits every implementation alike."""
    for fn in fns.values():
        fn()  # warm-up (allocator, lazy init)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def peak_memory_child(impl: str, m: int, threads: int) -> None:
    """Run in a subprocess: print the peak RSS increase (bytes) of one call."""
    torch.set_num_threads(threads)
    ens, obs = make_data(m)
    fn = ours_step(ens, obs, "fair") if impl == "ours" else sr_step(ens, obs, impl)
    reset_peak_rss()
    before = psutil.Process().memory_info().rss
    fn()
    print(json.dumps({"peak_extra": peak_rss() - before, "ens_bytes": ens.nbytes}))


def reset_peak_rss() -> None:
    """Reset this process's RSS high-water mark (Linux >= 4.0), so it excludes data creation."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # then the peak may include earlier transients (an over-estimate, never under)


def peak_rss() -> int:
    """Peak RSS of this process in bytes: VmHWM (per address space, so not inherited from the
    parent across fork+exec as ``ru_maxrss`` is), falling back to ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory(impl: str, m: int, threads: int) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--_child", impl, str(m), "--threads", str(threads)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ms", type=int, nargs="+", default=[8, 20, 50])
    ap.add_argument("--repeats", type=int, default=11)
    # Default 1 thread: scoringrules' numpy kernels are single-threaded, so this compares
    # per core; on a shared/loaded machine torch's thread pool also degrades badly.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--_child", nargs=2, metavar=("IMPL", "M"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        peak_memory_child(args._child[0], int(args._child[1]), args.threads)
        return
    torch.set_num_threads(args.threads)
    mib = 2**20
    print(f"CRPS on (m, {', '.join(map(str, FIELD))}) float32; torch {torch.__version__} "
          f"({args.threads} threads), scoringrules {sr.__version__} numpy backend; "
          f"median of {args.repeats}")
    header = (f"{'m':>3} | {'ours fair f+b':>13} | {'sr fair fwd':>11} | {'ratio':>5} | "
              f"{'ours std f+b':>12} | {'sr nrg fwd':>10} | {'ratio':>5} | {'sr pwm fwd':>10} | "
              f"{'ours peak':>9} | {'/ens':>4} | {'sr fair peak':>12} | {'/ens':>5}")
    print(header)
    print("-" * len(header))
    for m in args.ms:
        ens, obs = make_data(m)
        t = median_seconds({
            "ours_fair": ours_step(ens, obs, "fair"),
            "sr_fair": sr_step(ens, obs, "fair"),
            "ours_std": ours_step(ens, obs, "standard"),
            "sr_nrg": sr_step(ens, obs, "nrg"),
            "sr_pwm": sr_step(ens, obs, "pwm"),
        }, args.repeats)
        mem_ours = peak_memory("ours", m, args.threads)
        mem_sr = peak_memory("fair", m, args.threads)
        eb = mem_ours["ens_bytes"]
        print(f"{m:>3} | {t['ours_fair'] * 1e3:>10.1f} ms | {t['sr_fair'] * 1e3:>8.1f} ms | "
              f"{t['ours_fair'] / t['sr_fair']:>5.2f} | {t['ours_std'] * 1e3:>9.1f} ms | "
              f"{t['sr_nrg'] * 1e3:>7.1f} ms | {t['ours_std'] / t['sr_nrg']:>5.2f} | "
              f"{t['sr_pwm'] * 1e3:>7.1f} ms | {mem_ours['peak_extra'] / mib:>6.0f} MiB | "
              f"{mem_ours['peak_extra'] / eb:>4.1f} | {mem_sr['peak_extra'] / mib:>8.0f} MiB | "
              f"{mem_sr['peak_extra'] / eb:>5.1f}")
    print("f+b = forward + backward (loss = masked mean, autograd through torch.sort); "
          "fwd = forward only. /ens = peak extra memory / ensemble bytes (constant = O(m)).")
    print(f"ratio = ours / scoringrules (target <= 2); machine: {psutil.cpu_count()} CPUs, "
          f"load average {psutil.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
