"""Train-step throughput of the cVAE at 156x132 (13x11 x 6 channels), default model config.

    .venv/bin/python bench/bench_train_cvae.py [--steps 8] [--channels_last] [--threads N]

Reports samples/s and the split of a step into data loading, forward (model + loss),
backward, optimiser (clip + AdamW) and logging; achieved FLOP/s (torch FlopCounterMode)
against the measured fp32 matmul FLOP/s of this machine; and what MLflow tracking adds to an
epoch (async metric logging, as the training loop does it, vs no tracking).
Targets (issue 3): tracking < 2% of an epoch, data < 5%, step >= 40% of matmul FLOP/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # make_prepared: a random prepared dataset

from helpers import make_prepared  # noqa: E402

from precipgen.config import Config  # noqa: E402
from precipgen.data.datasets import (  # noqa: E402
    DayDataset,
    EpochSampler,
    heavy_weights,
    land_mask_tensor,
    statics_tensor,
)
from precipgen.data.store import PreparedDataset  # noqa: E402
from precipgen.models.cvae import CVAE  # noqa: E402
from precipgen.train.losses import CVAELoss  # noqa: E402


def matmul_flops(n: int = 2048, reps: int = 10) -> float:
    """Best-of-``reps`` fp32 ``torch.mm`` rate (the machine may be shared: best is the peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--skip_tracking", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Config()
    bs = cfg.train.batch_size
    tmp = Path(tempfile.mkdtemp(prefix="bench_cvae_"))
    ds = PreparedDataset.open(make_prepared(tmp, days=96, H=156, W=132, factor=12, C=6))
    train = DayDataset(ds, ds.split["train"])
    sampler = EpochSampler(len(train), 0, heavy_weights(ds, ds.split["train"], 4.0))
    loader = torch.utils.data.DataLoader(train, batch_size=bs, sampler=sampler, drop_last=True)
    statics, land = statics_tensor(ds), land_mask_tensor(ds)
    m = cfg.model
    torch.manual_seed(0)
    model = CVAE(ds.n_channels, len(ds.static_names), ds.lr_shape, ds.hr_shape, d_z=m.d_z,
                 base_filters=m.base_filters, d_x=m.d_x, d_y=m.d_y, prior=m.prior)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    loss_fn = CVAELoss(ds.normalization, ds.thresholds["P95"], land, warmup_epochs=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cvae {n_params / 1e6:.2f}M "
          f"params, batch {bs}, 156x132 <- 13x11x6, channels_last={args.channels_last}")

    def step(batch: dict[str, torch.Tensor], times: dict[str, float] | None = None) -> float:
        t = time.perf_counter
        t0 = t()
        x, y = batch["x"].to(memory_format=fmt), batch["y"].to(memory_format=fmt)
        out = model(x, y, statics)
        terms = loss_fn(out[0], y, *out[1:], epoch=1)
        t1 = t()
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        t2 = t()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t3 = t()
        logs = {"loss": float(terms["loss"].detach()),  # what the loop does per step
                **{k: float(terms[k].detach()) for k in ("L_rec", "L_mass", "KL")}}
        t4 = t()
        if times is not None:
            for k, v in (("forward", t1 - t0), ("backward", t2 - t1), ("optimiser", t3 - t2),
                         ("logging", t4 - t3)):
                times[k] += v
        return logs["loss"]

    # FLOPs of one training step (forward + loss + backward)
    batch = next(iter(loader))
    with FlopCounterMode(display=False) as fc:
        out = model(batch["x"], batch["y"], statics)
        loss_fn(out[0], batch["y"], *out[1:], epoch=1)["loss"].backward()
    step_flops = fc.get_total_flops()
    opt.zero_grad()
    step(batch)  # warm-up
    peak = matmul_flops()

    # The machine may be shared: time every step and report the median and the best step.
    keys = ("data", "forward", "backward", "optimiser", "logging")
    per_step: list[dict[str, float]] = []
    it = iter(loader)
    for _ in range(args.steps):
        times = dict.fromkeys(keys, 0.0)
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        times["data"] = time.perf_counter() - t0
        step(batch, times)
        per_step.append(times)
    totals = sorted(range(len(per_step)), key=lambda i: sum(per_step[i].values()))
    for label, i in (("median step", totals[len(totals) // 2]), ("best step", totals[0])):
        t = per_step[i]
        total, fb = sum(t.values()), t["forward"] + t["backward"]
        print(f"\n{label}: {total:.3f} s -> {bs / total:.2f} samples/s")
        for k, v in t.items():
            print(f"  {k:<10} {v * 1e3:9.1f} ms  {100 * v / total:5.1f}%")
        print(f"  achieved {step_flops / fb / 1e9:.1f} GFLOP/s in fwd+bwd, "
              f"{step_flops / total / 1e9:.1f} GFLOP/s over the step = "
              f"{100 * step_flops / total / peak:.0f}% of matmul FLOP/s")
    print(f"\nFLOPs per step (fwd+bwd, FlopCounterMode): {step_flops / 1e9:.1f} GFLOP; "
          f"fp32 matmul (2048^2 torch.mm, best of 10): {peak / 1e9:.1f} GFLOP/s")

    if args.skip_tracking:
        return
    # tracking overhead over an "epoch" of `steps` steps: per-epoch metrics (as loop.fit logs
    # them) plus per-step metrics (worst case, as iteration logging does), async, vs none
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    from precipgen import tracking

    in_calls = [0.0]  # time spent inside log_metrics (the part the loop waits for)

    def epoch(run: tracking.Run | None) -> float:
        it = iter(loader)
        t0 = time.perf_counter()
        for i in range(args.steps):
            loss = step(next(it))
            if run is not None:
                t1 = time.perf_counter()
                run.log_metrics({"iter_loss": loss}, step=i)
                in_calls[0] += time.perf_counter() - t1
        if run is not None:
            t1 = time.perf_counter()
            run.log_metrics({f"val_{k}": 1.0 for k in range(10)}, step=1)
            in_calls[0] += time.perf_counter() - t1
        return time.perf_counter() - t0

    t_none, t_track, t_flush = [], [], []
    with tracking.start_run("bench_train_cvae", experiment="precipgen-bench") as run:
        for _ in range(2):  # alternate, best of two each: the machine may be shared
            t_none.append(epoch(None))
            t_track.append(epoch(run))
            t0 = time.perf_counter()
            tracking.flush()
            t_flush.append(time.perf_counter() - t0)
    a, b = min(t_none), min(t_track)
    print(f"\nepoch of {args.steps} steps (best of 2): no tracking {a:.2f}s, async tracking "
          f"(per-step + per-epoch metrics) {b:.2f}s ({100 * (b - a) / a:+.1f}%); "
          f"flush {1e3 * min(t_flush):.0f} ms; inside log_metrics "
          f"{1e3 * in_calls[0] / 2:.1f} ms per epoch = {100 * in_calls[0] / 2 / a:.2f}% of it")


if __name__ == "__main__":
    main()
