"""Peak memory and time of one CRPS fine-tuning step vs ensemble size m (chunked gradient).

One step = what ``finetune_crps`` does per batch: frozen encoder (no graph), m members
generated in chunks of ``--chunk`` without a graph, closed-form dCRPS/dx, each chunk
regenerated with a graph and back-propagated, AdamW step on the decoder.

Each m runs in a fresh subprocess so peak memory is not polluted by the previous one:
peak RSS from ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (CPU; also reported as the rise
over the RSS reached after a warm-up step at m = chunk, i.e. what the ensemble adds) or
``torch.cuda.max_memory_allocated`` on GPU. "CRPS %" is the share of the step spent in the
CRPS score and its closed-form gradient (crps_ensemble + crps_grad_wrt_members).

    python bench/bench_finetune_memory.py                 # defaults below
    python bench/bench_finetune_memory.py --hr 156 132 --factor 12   # the PRISM grid

"epoch s" = step time x ceil(``--train_windows`` / ``--batch``) (default: the standard
profile's 1437 training windows of 4 days). The model carries the multi-scale FiLM noise
of issue 14 (``--noise_channels``, 0 = the seed's input noise only).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from precipgen.models.vae3d import SimpleVAE3D
from precipgen.scores import crps as crps_mod


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(a: argparse.Namespace) -> dict[str, float]:
    torch.set_num_threads(a.threads)  # a shared machine: one thread unless told otherwise
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    H, W = a.hr
    h, w = H // a.factor, W // a.factor
    model = SimpleVAE3D(a.channels, torch.randn(3, H, W), (h, w), a.base_filters,
                        a.latent_channels).to(device)
    if a.noise_channels:
        model.enable_noise(a.noise_channels, a.noise_grid)
    model.freeze_encoder()
    opt = torch.optim.AdamW(model.get_trainable_parameters(), lr=1e-5)
    x = torch.randn(a.batch, a.channels, a.days, h, w, device=device)
    y = torch.randn(a.batch, 1, a.days, H, W, device=device)
    land = torch.ones(H, W, dtype=torch.bool, device=device)

    crps_time = [0.0]

    def timed(fn):
        def wrapper(*args, **kw):
            t = time.perf_counter()
            out = fn(*args, **kw)
            if device.type == "cuda":
                torch.cuda.synchronize()
            crps_time[0] += time.perf_counter() - t
            return out
        return wrapper

    crps_mod.crps_ensemble = timed(crps_mod.crps_ensemble)
    crps_mod.crps_grad_wrt_members = timed(crps_mod.crps_grad_wrt_members)

    def step(m: int) -> float:
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            mu, logvar = model.encode(x)
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        crps_mod.chunked_crps_backward(
            lambda s, e: model.decode_members(mu, logvar, s, e, seed), m, min(a.chunk, m), y, land,
            "almost_fair", 0.95)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return 0.0

    step(a.chunk)  # warm-up at m = chunk: allocator, optimizer state, kernels
    base = peak_mb(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, crps_times = [], []
    for _ in range(a.repeats):
        crps_time[0] = 0.0
        t = time.perf_counter()
        step(a.m)
        times.append(time.perf_counter() - t)
        crps_times.append(crps_time[0])
    best = min(range(len(times)), key=times.__getitem__)
    peak = peak_mb(device)
    return {"m": a.m, "device": device.type, "peak_mb": peak, "rise_mb": peak - base,
            "step_s": times[best], "crps_frac": crps_times[best] / times[best]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--chunk", type=int, default=4)
    p.add_argument("--hr", type=int, nargs=2, default=[96, 96], metavar=("H", "W"))
    p.add_argument("--factor", type=int, default=8)
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--base_filters", type=int, default=16)
    p.add_argument("--latent_channels", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--noise_channels", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--noise_grid", default="coarse")
    p.add_argument("--train_windows", type=int, default=1437)
    p.add_argument("--json", type=Path, default=None, help="write the rows here")
    p.add_argument("--m", type=int, default=0, help=argparse.SUPPRESS)  # child mode
    a = p.parse_args()
    if a.m:
        print(json.dumps(child(a)))
        return

    H, W = a.hr
    print(f"grid {H}x{W} from {H // a.factor}x{W // a.factor}, D={a.days}, B={a.batch}, "
          f"C={a.channels}, base_filters={a.base_filters}, latent={a.latent_channels}, "
          f"chunk={a.chunk}, noise={a.noise_channels} {a.noise_grid}, "
          f"torch threads={torch.get_num_threads()}")
    rows = []
    for m in a.members:
        args = [sys.executable, __file__, "--m", str(m)] + [
            tok for k, v in vars(a).items() if k not in ("m", "members", "json", "train_windows")
            for tok in ([f"--{k}", *map(str, v)] if isinstance(v, list) else [f"--{k}", str(v)])
        ]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    ref = rows[0]
    print(f"{'m':>4} {'peak MB':>9} {'rise MB':>8} {'peak/m0':>8} {'step s':>8} "
          f"{'s/member':>9} {'epoch s':>9} {'CRPS %':>7}  ({ref['device']})")
    for r in rows:
        r["epoch_s"] = r["step_s"] * math.ceil(a.train_windows / a.batch)
        r["peak_ratio"] = r["peak_mb"] / ref["peak_mb"]
        print(f"{r['m']:>4} {r['peak_mb']:>9.1f} {r['rise_mb']:>8.1f} "
              f"{r['peak_ratio']:>8.3f} {r['step_s']:>8.3f} "
              f"{r['step_s'] / r['m']:>9.4f} {r['epoch_s']:>9.1f} {100 * r['crps_frac']:>6.2f}%")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"args": {k: v for k, v in vars(a).items() if k != "json"},
                                      "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
