"""``precipgen <step> --config FILE --set a.b=value ...``

Each step lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
this file only wires them to subcommands (imported lazily: ``precipgen prepare`` does not pay
for importing the models).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from precipgen import __version__
from precipgen.config import Config, ConfigError, load_config, split_overrides

STEPS: dict[str, tuple[str, str]] = {
    "prepare": ("precipgen.prepare", "bring data in and write a prepared dataset"),
    "train_cvae": ("precipgen.train.cvae", "train the conditional VAE"),
    "sample": ("precipgen.sample", "generate quality-gated synthetic days"),
    "pretrain_vae": ("precipgen.train.vae3d", "pretrain the deterministic 3D VAE"),
    "finetune_crps": ("precipgen.train.finetune_crps", "CRPS fine-tuning of the 3D VAE decoder"),
    "evaluate": ("precipgen.evaluate", "verify models and write a report"),
    "tune": ("precipgen.tune", "Optuna study, every trial a nested MLflow run"),
    "main": ("precipgen.pipeline", "the whole pipeline as one parent run"),
}


def available_steps() -> dict[str, tuple[str, str]]:
    return {k: v for k, v in STEPS.items() if importlib.util.find_spec(v[0]) is not None}


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML config (default: configs/default.yaml)")
    p.add_argument(
        "--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set loss.lambda_ext=5 (repeatable)",
    )
    p.add_argument(
        "--overrides", default="",
        help="overrides as one string 'a.b=1 c.d=x' (what MLproject passes)",
    )


def config_from_args(args: argparse.Namespace, extra: Sequence[str] = ()) -> Config:
    """Config file <- --overrides <- --set <- ``extra`` (named step flags mapped to keys)."""
    overrides = [*split_overrides(args.overrides), *args.set, *extra]
    return load_config(args.config or None, overrides)


def empty_to_none(value: str | None) -> str | None:
    """MLproject parameters cannot be absent; an empty string means 'not given'."""
    return value if value not in (None, "", "None", "none") else None


def opt(tp: type) -> Callable[[str], Any]:
    """argparse type for MLproject-friendly flags: '' (MLproject's "not given") -> None, and an
    integer may arrive as "30.0" (MLproject float parameters)."""

    def parse(s: str) -> Any:
        if empty_to_none(s) is None:
            return None
        try:
            if tp is int:
                f = float(s)
                if not f.is_integer():
                    raise ValueError
                return int(f)
            return tp(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {tp.__name__}, got {s!r}") from None

    parse.__name__ = tp.__name__
    return parse


def truthy(value: Any) -> bool:
    """Boolean flags given alone (``--overwrite``) or with a value (MLproject: ``true``)."""
    return str(value).strip().lower() in ("1", "true", "yes", "y", "on")


def add_flag(p: argparse.ArgumentParser, flag: str, tp: type, key: str, help: str = "") -> None:
    """A named step flag that sets config key ``key`` (None = use the config)."""
    p.add_argument(f"--{flag}", type=opt(tp), default=None,
                   help=f"{help} (sets {key})" if help else f"sets {key}")


def add_flags(p: argparse.ArgumentParser, flags: dict[str, tuple[Any, ...]]) -> None:
    """A step's flag table: ``{flag: (config key, type[, help])}``."""
    for flag, (key, tp, *text) in flags.items():
        add_flag(p, flag, tp, key, *text)


def flag_overrides(args: argparse.Namespace, flags: dict[str, str | tuple[Any, ...]]) -> list[str]:
    """Named step flags -> ``section.key=value`` overrides for :func:`config_from_args`.

    ``flags`` maps a flag to its config key (or to a tuple starting with it). Values are
    JSON-encoded, so YAML keeps paths strings and numbers numbers."""
    out = []
    for flag, spec in flags.items():
        key = spec[0] if isinstance(spec, tuple) else spec
        value = getattr(args, flag, None)
        if value is not None and value != "":
            out.append(f"{key}={json.dumps(value)}")
    return out


def build_parser(step: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``step``'s module is imported to add its arguments (so a
    bad-input error or ``--help`` of one step does not pay for importing torch and the models)."""
    parser = argparse.ArgumentParser(
        prog="precipgen", description="Generative precipitation downscaling, tracked in MLflow."
    )
    parser.add_argument("--version", action="version", version=f"precipgen {__version__}")
    sub = parser.add_subparsers(dest="step", metavar="STEP")
    for name, (module, help_text) in available_steps().items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == step:
            add_common_arguments(sp)
            importlib.import_module(module).add_arguments(sp)
        sp.set_defaults(_module=module)
    return parser


def _requested_step(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_requested_step(argv))
    args = parser.parse_args(argv)
    if not args.step:
        parser.print_help()
        return 2
    from precipgen.tracking import TrackingError

    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, TrackingError) as e:
        # User errors: one clear line, no traceback.
        print(f"precipgen {args.step}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"precipgen {args.step}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
