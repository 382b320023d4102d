"""``precipgen <step> --config FILE --set a.b=value ...``: the parser and the dispatch.

Each step is ``precipgen.steps.<step>``, exposing ``add_arguments(parser)`` and
``run(args) -> int``; only the requested one is imported (``precipgen prepare`` does not pay
for importing the models, and a bad flag fails fast).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

from precipgen import __version__, paths
from precipgen.config import ConfigError
from precipgen.locks import OutputBusyError
from precipgen.steps.flags import add_common_arguments

STEPS: dict[str, str] = {  # entry point -> help; its module is precipgen.steps.<entry point>
    "prepare": "bring data in and write a prepared dataset",
    "train_cvae": "train the conditional VAE",
    "sample": "generate quality-gated synthetic days",
    "pretrain_vae": "pretrain the deterministic 3D VAE",
    "finetune_crps": "CRPS fine-tuning of the 3D VAE decoder",
    "evaluate": "verify models and write a report",
    "tune": "Optuna study, every trial a nested MLflow run",
    "main": "the whole pipeline as one parent run",
}


def step_module(name: str) -> Any:
    return importlib.import_module(f"precipgen.steps.{name}")


def build_parser(step: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``step``'s module is imported to add its arguments (so a
    bad-input error or ``--help`` of one step does not pay for importing torch and the models)."""
    parser = argparse.ArgumentParser(
        prog="precipgen", description="Generative precipitation downscaling, tracked in MLflow."
    )
    parser.add_argument("--version", action="version", version=f"precipgen {__version__}")
    sub = parser.add_subparsers(dest="step", metavar="STEP")
    for name, help_text in STEPS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == step:
            add_common_arguments(sp)
            step_module(name).add_arguments(sp)
    return parser


def _requested_step(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    paths.enter_home()  # PRECIPGEN_HOME, when set, is where every relative path lives
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_requested_step(argv))
    args = parser.parse_args(argv)
    if not args.step:
        parser.print_help()
        return 2
    from precipgen.tracking import TrackingError

    try:
        return int(step_module(args.step).run(args) or 0)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, TrackingError,
            OutputBusyError) as e:
        # User errors: one clear line, no traceback.
        print(f"precipgen {args.step}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"precipgen {args.step}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
