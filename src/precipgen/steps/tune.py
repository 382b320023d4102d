"""``precipgen tune``: an Optuna study over a trainer's hyperparameters, every trial a nested
MLflow run (see :mod:`precipgen.tuning.study` for what is logged and how workers share a study).

    precipgen tune --study cvae --n_trials 20 --config quick --set data.path=...
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from precipgen.config import ConfigError, split_overrides
from precipgen.steps.flags import opt
from precipgen.tuning.space import PRUNERS, SAMPLERS, load_space, preset_path
from precipgen.tuning.study import Settings, default_storage, run_study


def _opt(tp: type) -> Callable[[str], Any]:
    """:func:`precipgen.steps.flags.opt`, except that "none" is a value here (``--pruner none``)."""
    base = opt(tp)

    def parse(s: str) -> Any:
        return "none" if tp is str and s.strip().lower() == "none" else base(s)

    parse.__name__ = tp.__name__
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", type=_opt(str), default="cvae",
                   help="study preset tuning/<study>.yaml: cvae | cvae_pareto | finetune_crps | "
                        "finetune_crps_time (default cvae)")
    p.add_argument("--space", type=_opt(str), default=None,
                   help="search space YAML instead of the preset (format: tuning/cvae.yaml)")
    p.add_argument("--n_trials", type=_opt(int), default=20,
                   help="trials run by this process (default 20)")
    p.add_argument("--study_name", type=_opt(str), default=None,
                   help="Optuna study name (default: the preset's name); an existing one resumes")
    p.add_argument("--storage", type=_opt(str), default=None,
                   help=f"Optuna storage URL (default {default_storage()}); "
                        "postgresql://user@host/db shares one study between processes")
    p.add_argument("--timeout", type=_opt(float), default=None,
                   help="stop starting trials after this many seconds")
    p.add_argument("--sampler", type=_opt(str), default=None, choices=[*SAMPLERS, None],
                   help="default: the preset's (tpe; nsga2 for multi-objective)")
    p.add_argument("--pruner", type=_opt(str), default=None, choices=[*PRUNERS, None],
                   help="default: the preset's (median); multi-objective studies cannot prune")
    p.add_argument("--seed", type=_opt(int), default=None,
                   help="sampler seed (trial training seeds come from train.seed)")
    p.add_argument("--pretrained", type=_opt(str), default=None,
                   help="finetune_crps studies: the vae3d checkpoint "
                        "(default models:/vae3d-deterministic@latest)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = [*split_overrides(args.overrides), *args.set]
    space = args.space or preset_path(args.study or "cvae")
    spec = load_space(space, args.config, overrides)
    if args.n_trials is not None and args.n_trials < 1:
        raise ConfigError(f"--n_trials must be >= 1, got {args.n_trials}")
    return Settings(
        spec=spec, study_name=args.study_name or spec.name,
        storage=args.storage or default_storage(),
        sampler=args.sampler or spec.sampler,
        pruner="none" if spec.multi else (args.pruner or spec.pruner["kind"]),
        n_trials=args.n_trials or 20, timeout=args.timeout, seed=args.seed,
        config_path=args.config, overrides=overrides, pretrained=args.pretrained,
    )


def run(args: argparse.Namespace) -> int:
    return run_study(settings_from_args(args), args.pruner)
