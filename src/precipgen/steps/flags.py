"""The steps' command-line flags: common ones (``--config``, ``--set``, ``--overrides``), a
step's table of named flags that set config keys, and MLproject's conventions (every
parameter is passed; an empty string means "not given"; integers may arrive as "30.0")."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

from precipgen.config import Config, load_config, split_overrides


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="YAML config file, or a shipped profile by name: default (the seeds' "
                        "values), quick, tiny, standard")
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
