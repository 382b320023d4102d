"""``precipgen pretrain_vae``: the deterministic 3D VAE, MSE + beta * KL (seed 000).

The trainer is :func:`precipgen.train.vae3d.pretrain`; it registers ``vae3d-deterministic``.
"""

from __future__ import annotations

import argparse

from precipgen.steps.flags import add_flags, config_from_args, flag_overrides, opt

# named flags -> (config key, type, help); "" from MLproject = use the config
FLAGS: dict[str, tuple[str, type, str]] = {
    "data": ("data.path", str, "prepared dataset dir"),
    "epochs": ("vae3d.epochs", int, "default 50"),
    "batch_size": ("vae3d.batch_size", int, "default 4"),
    "lr": ("vae3d.lr", float, "default 1e-4"),
    "window_days": ("vae3d.window_days", int, "days per window (default 8)"),
    "window_stride": ("vae3d.window_stride", int,
                      "days between training windows (default 1; = window_days: no overlap)"),
    "beta_kl": ("vae3d.beta_kl", float, "KL weight (default 1e-3)"),
    "seed": ("train.seed", int, "default 42"),
    "output_dir": ("vae3d.output_dir", str, "runs go to <output_dir>/vae3d_<TIMESTAMP>/"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flags(p, FLAGS)
    p.add_argument("--resume", type=opt(str), default=None, metavar="RUN_DIR",
                   help="continue the run in this vae3d_<TIMESTAMP> directory")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, flag_overrides(args, FLAGS))
    from precipgen.train.vae3d import pretrain

    pretrain(cfg, resume_dir=args.resume)
    return 0
