"""``precipgen train_cvae``: train the conditional VAE on a prepared dataset (seed 001).

The trainer is :func:`precipgen.train.cvae.train`; metrics, checkpoints, figures and the
registered model ``cvae`` are described there.
"""

from __future__ import annotations

import argparse
import sys

from precipgen.steps.flags import add_flags, config_from_args, flag_overrides, truthy

# named flags -> (config key, type) (MLproject passes every parameter; "" = use the config)
FLAGS: dict[str, tuple[str, type]] = {
    "data": ("data.path", str),
    "epochs": ("train.epochs", int),
    "batch_size": ("train.batch_size", int),
    "lr": ("train.lr", float),
    "lambda_ext": ("loss.lambda_ext", float),
    "lambda_mass": ("loss.lambda_mass", float),
    "beta_kl": ("loss.beta_kl", float),
    "d_z": ("model.d_z", int),
    "prior": ("model.prior", str),
    "seed": ("train.seed", int),
    "output_dir": ("train.output_dir", str),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flags(p, FLAGS)
    p.add_argument("--resume", nargs="?", const="true", default="false",
                   help="continue from <output_dir>/checkpoints/cvae_last.pt in the same MLflow run")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, flag_overrides(args, FLAGS))
    from precipgen.train.cvae import train  # torch: only once the flags are good
    from precipgen.train.loop import NonFiniteLossError

    try:
        train(cfg, resume=truthy(args.resume))
    except NonFiniteLossError as e:
        print(f"precipgen train_cvae: error: {e}", file=sys.stderr)
        return 2
    return 0
