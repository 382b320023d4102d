"""``precipgen finetune_crps``: turn the deterministic 3D VAE generative (seed 000).

Loads a pretrained ``vae3d`` checkpoint (``--pretrained``: a path, ``runs:/...`` or
``models:/...``; empty = ``models:/vae3d-deterministic@latest``), freezes the encoder and
trains the decoder alone with an ensemble CRPS loss; see :mod:`precipgen.train.crps` for the
logged scores and outputs. The best model is registered as ``vae3d-crps``.
"""

from __future__ import annotations

import argparse

from precipgen.steps.flags import add_flags, config_from_args, flag_overrides, opt

# named flags -> (config key, type, help): the seed's options; "" = use the config
FLAGS: dict[str, tuple[str, type, str]] = {
    "data": ("data.path", str, "prepared dataset dir"),
    "epochs": ("finetune.epochs", int, "default 30"),
    "batch_size": ("finetune.batch_size", int, "default 4"),
    "lr": ("finetune.lr", float, "default 1e-5"),
    "crps_samples": ("finetune.crps_samples", int, "ensemble size m (default 20)"),
    "window_stride": ("finetune.window_stride", int, "days between training windows (default 1)"),
    "chunk_size": ("finetune.chunk_size", int,
                   "members per chunk; below crps_samples: chunked exact gradient (0 = all)"),
    "crps_kind": ("finetune.crps_kind", str, "fair | standard | almost_fair (default fair)"),
    "grad_clip": ("finetune.grad_clip", float, "default 1.0"),
    "checkpoint_interval": ("finetune.checkpoint_interval", int, "default 5"),
    "seed": ("train.seed", int, "default 42"),
    "output_dir": ("finetune.output_dir", str,
                   "runs go to <output_dir>/vae_generative_crps_<TIMESTAMP>/"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pretrained", type=opt(str), default=None,
                   help="path | runs:/<id>/<path> | models:/<name>@<alias> "
                        "(default models:/vae3d-deterministic@latest)")
    add_flags(p, FLAGS)
    p.add_argument("--resume", type=opt(str), default=None, metavar="RUN_DIR",
                   help="continue the run in this vae_generative_crps_<TIMESTAMP> directory")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, flag_overrides(args, FLAGS))
    from precipgen.train.crps import finetune

    finetune(cfg, pretrained=args.pretrained, resume_dir=args.resume)
    return 0
