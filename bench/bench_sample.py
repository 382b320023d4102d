"""Benchmark: ``precipgen sample`` throughput at 156x132 with the default cVAE config (random
weights), generation and writing measured separately.

- generation: :func:`precipgen.synth.generate.generate_batch` (per-(day, k) noise, encoders,
  decoder, model space -> mm), plus the quality-gate statistics, per mode and precision (fp32,
  bf16 autocast) against issue 13's target: 2000 samples at 156x132 in < 60 s;
- writing: :class:`precipgen.synth.writer.SynthWriter` (per-sample ``.npy`` files, the
  consolidated arrays, ``samples.nc``), with and without the per-sample files.

    .venv/bin/python bench/bench_sample.py [--samples 64] [--batch_size 16] [--K 2] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from precipgen.config import ModelConfig
from precipgen.data import cf
from precipgen.data.synthetic import CHANNEL_NAMES, STATIC_NAMES
from precipgen.data.transforms import Normalization
from precipgen.models.cvae import CVAE
from precipgen.models.memory_format import fast_layout
from precipgen.synth.generate import LoadedCVAE, day_batches, generate_batch
from precipgen.synth.quality import sample_stats
from precipgen.synth.writer import SynthWriter
from precipgen.train.distributed import pick_device

H, W, FACTOR = 156, 132, 12


def fake_dataset(n_days: int, seed: int = 0) -> SimpleNamespace:
    """What generate_batch reads: X_lr (N, C, h, w) and Y_hr (N, 1, H, W), physical units."""
    rng = np.random.default_rng(seed)
    C = len(CHANNEL_NAMES)
    y = rng.gamma(0.7, 3.0, (n_days, 1, H, W)).astype(np.float32)
    y[rng.random(y.shape) < 0.5] = 0.0
    return SimpleNamespace(
        X_lr=rng.normal(size=(n_days, C, H // FACTOR, W // FACTOR)).astype(np.float32), Y_hr=y,
    )


def make_model(device: torch.device) -> LoadedCVAE:
    m = ModelConfig()
    C, S = len(CHANNEL_NAMES), len(STATIC_NAMES)
    torch.manual_seed(0)
    model = CVAE(C, S, (H // FACTOR, W // FACTOR), (H, W), d_z=m.d_z, base_filters=m.base_filters,
                 d_x=m.d_x, d_y=m.d_y, prior=m.prior).eval().to(device)
    norm = Normalization(0.5, 1.0, list(CHANNEL_NAMES), [n == "pr" for n in CHANNEL_NAMES],
                         [0.0] * C, [1.0] * C)
    return LoadedCVAE(model, norm, torch.randn(S, H, W), dict(model.hparams), list(CHANNEL_NAMES),
                      Path("random-weights"), None)


def bench_generation(m: LoadedCVAE, ds: SimpleNamespace, days: np.ndarray, K: int, mode: str,
                     batch_size: int, device: torch.device, precision: str = "fp32"
                     ) -> tuple[float, list]:
    land_np = np.ones((H, W), dtype=bool)
    land_np[:, :10] = False
    land = torch.from_numpy(land_np).to(device)
    # warm-up (allocator, cuDNN autotune) on one batch, not timed
    generate_batch(m, ds, days[: max(1, batch_size // K)], K, mode, 1.0, 0, device, land, precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    batches = []
    n = 0
    for chunk in day_batches(days, K, batch_size):
        b = generate_batch(m, ds, chunk, K, mode, 1.0, 0, device, land, precision)
        for d, k, y, r in zip(b.days, b.ks, b.y_mm, b.y_real):
            sample_stats(d, k, y, r, land_np, 0.1, 0.1)
        batches.append(b)
        n += len(b.days)
    return n / (time.perf_counter() - t0), batches


def bench_writing(batches: list, per_sample: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        w = SynthWriter(Path(tmp), (H, W), batches[0].x_phys.shape[1:], per_sample_files=per_sample)
        t0 = time.perf_counter()
        n = 0
        for b in batches:
            for i in range(len(b.days)):
                w.add(int(b.days[i]), int(b.ks[i]), b.y_mm[i], b.x_phys[i])
                n += 1
        grid = cf.Grid("mm/day", np.ones((H, W), dtype=bool), list(CHANNEL_NAMES),
                       [None] * len(CHANNEL_NAMES))
        w.finalize({"mode": "bench", "K": int(max(b.ks.max() for b in batches)) + 1}, grid)
        return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=64, help="samples per timed run")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--K", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device)
    n_days = max(1, args.samples // args.K)
    ds = fake_dataset(n_days)
    days = np.arange(n_days)
    m = make_model(device)
    fast_layout(m.model)  # as open_model does
    n_params = sum(p.numel() for p in m.model.parameters())
    print(f"device {device} ({torch.get_num_threads()} CPU threads), default cVAE "
          f"({n_params / 1e6:.2f} M params), {H}x{W}, C={len(CHANNEL_NAMES)}, K={args.K}, "
          f"batch {args.batch_size}, {n_days * args.K} samples per run")
    batches, ref = [], np.zeros(0)
    for precision in ("fp32", "bf16"):
        for mode in ("posterior", "prior"):
            rate, batches = bench_generation(m, ds, days, args.K, mode, args.batch_size, device,
                                             precision)
            secs = 2000 / rate
            print(f"generation ({mode:9s}, {precision}): {rate:8.1f} samples/s "
                  f"-> 2000 samples in {secs:.0f} s (target < 60 s)")
        y = np.concatenate([b.y_mm for b in batches])
        if precision == "fp32":
            ref = y
        else:
            rel = np.abs(y - ref).mean() / max(np.abs(ref).mean(), 1e-9)
            print(f"bf16 vs fp32 (prior): mean |difference| {rel:.2e} of the mean field")
    for per_sample in (True, False):
        rate = bench_writing(batches, per_sample)
        what = "per-sample files + consolidated + samples.nc" if per_sample else \
            "consolidated + samples.nc only"
        print(f"writing ({what}): {rate:8.1f} samples/s")


if __name__ == "__main__":
    main()
