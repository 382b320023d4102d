"""Optuna study presets and search spaces, read from ``tuning/*.yaml``.

A preset names the trainer, the objective(s), the parameters (config key paths such as
``loss.lambda_ext``) and optional fixed overrides for every trial. Keys are checked against
the real config at load time (by building a config with each bound), so a typo is an error
naming the closest key, and a float range on an int key is an error too. Users add
parameters by editing the YAML; no code changes.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from precipgen.config import Config, ConfigError, load_config, read_yaml_mapping
from precipgen.paths import PACKAGE_DIR

TUNING_DIR = PACKAGE_DIR / "tuning" / "presets"  # package data (`tuning/` in the checkout)
TRAINERS = ("cvae", "finetune_crps")
PARAM_TYPES = ("float", "int", "categorical")
DIRECTIONS = ("minimize", "maximize")
AGGREGATES = ("at_best", "last", "mean")  # at_best: the epoch of the trial's best checkpoint
TRANSFORMS = (None, "abs")
SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("median", "hyperband", "none")

_TOP_KEYS = ("name", "trainer", "description", "objectives", "params", "sampler", "pruner", "set")
_PARAM_KEYS = ("name", "type", "low", "high", "log", "step", "choices")
_OBJ_KEYS = ("metric", "direction", "transform", "aggregate")


def _check_keys(got: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for k in got:
        if k not in allowed:
            match = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.0)
            hint = f" (did you mean '{match[0]}'?)" if match else ""
            raise ConfigError(f"{where}: unknown key '{k}'{hint}")


@dataclass(frozen=True)
class Param:
    name: str  # config key path
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log,
                                     step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"name": self.name, "type": self.type, "choices": list(self.choices)}
        out = {"name": self.name, "type": self.type, "low": self.low, "high": self.high,
               "log": self.log}
        return out | ({"step": self.step} if self.step is not None else {})

    def probe_values(self) -> list[Any]:
        """Values that must all build a valid config (bounds / every choice)."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str = "minimize"
    transform: str | None = None  # "abs": e.g. |val_mass_bias|
    aggregate: str = "at_best"

    @property
    def label(self) -> str:
        return f"|{self.metric}|" if self.transform == "abs" else self.metric

    @property
    def key(self) -> str:
        """A metric-name-safe label (``abs_val_mass_bias``)."""
        return f"abs_{self.metric}" if self.transform == "abs" else self.metric

    def of(self, value: float) -> float:
        return abs(value) if self.transform == "abs" else float(value)

    def reduce(self, history: list[dict[str, float]], best_epoch: int) -> float:
        """The trial's objective value from its per-epoch history."""
        vals = [self.of(h[self.metric]) for h in history if self.metric in h]
        if not vals:
            raise ValueError(f"objective metric '{self.metric}' was never logged")
        if self.aggregate == "last":
            return vals[-1]
        if self.aggregate == "mean":
            return sum(vals) / len(vals)
        at = [self.of(h[self.metric]) for h in history
              if int(h.get("epoch", -1)) == best_epoch and self.metric in h]
        return at[0] if at else vals[-1]


@dataclass(frozen=True)
class StudySpec:
    name: str
    trainer: str
    objectives: tuple[Objective, ...]
    params: tuple[Param, ...]
    sampler: str = "tpe"
    sampler_options: dict[str, Any] = field(default_factory=dict)  # kwargs of the Optuna sampler
    pruner: dict[str, Any] = field(default_factory=lambda: {"kind": "median"})
    set: tuple[str, ...] = ()  # config overrides for every trial
    description: str = ""
    source: str = ""

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def apply(self, values: dict[str, Any], config_path: str | None = None,
              overrides: list[str] | None = None) -> Config:
        """Config file <- this preset's ``set`` <- ``overrides`` <- the parameter ``values``."""
        return load_config(config_path, [*self.set, *(overrides or []), *to_overrides(values)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "trainer": self.trainer,
            "objectives": [o.__dict__ for o in self.objectives],
            "params": [p.to_dict() for p in self.params],
            "sampler": {"kind": self.sampler, **self.sampler_options}, "pruner": dict(self.pruner), "set": list(self.set),
        }


def to_overrides(values: dict[str, Any]) -> list[str]:
    """``{"loss.lambda_ext": 5.2}`` -> ``["loss.lambda_ext=5.2"]`` (JSON is valid YAML)."""
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """``{"loss.lambda_ext": 5.2}`` -> ``{"loss": {"lambda_ext": 5.2}}``."""
    out: dict[str, Any] = {}
    for key, v in values.items():
        *parents, leaf = key.split(".")
        cur = out
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[leaf] = v
    return out


def preset_path(study: str) -> Path:
    """``tuning/<study>.yaml``; a clear error listing the presets when there is none."""
    path = TUNING_DIR / f"{study}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in TUNING_DIR.glob("*.yaml"))
        match = difflib.get_close_matches(study, names, n=1, cutoff=0.0)
        hint = f" (did you mean '{match[0]}'?)" if match else ""
        raise ConfigError(f"no study preset {path}{hint}; presets: {', '.join(names)} "
                          "(or pass --space FILE)")
    return path


def _param(raw: Any, i: int, src: str) -> Param:
    where = f"{src}: params[{i}]"
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"{where} must be a mapping with a 'name' (a config key path)")
    where = f"{src}: param '{raw['name']}'"
    _check_keys(raw, _PARAM_KEYS, where)
    kind = raw.get("type", "float")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{where}: type {kind!r} is not one of {list(PARAM_TYPES)}")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: a categorical parameter needs a non-empty 'choices' list")
        return Param(str(raw["name"]), kind, choices=tuple(choices))
    if "low" not in raw or "high" not in raw:
        raise ConfigError(f"{where}: a {kind} parameter needs 'low' and 'high'")
    cast = float if kind == "float" else int
    try:
        low, high = cast(raw["low"]), cast(raw["high"])
        step = cast(raw["step"]) if raw.get("step") is not None else None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: low/high/step must be {cast.__name__}s ({e})") from e
    if kind == "int" and any(isinstance(raw.get(k), float) and not float(raw[k]).is_integer()
                             for k in ("low", "high")):
        raise ConfigError(f"{where}: an int parameter needs integer low/high")
    log = bool(raw.get("log", False))
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log-scale parameter needs low > 0 (got {low})")
    if log and step is not None and kind == "float":
        raise ConfigError(f"{where}: 'step' and 'log' cannot be combined")
    return Param(str(raw["name"]), kind, low, high, log, step)


def _objective(raw: Any, i: int, src: str) -> Objective:
    where = f"{src}: objectives[{i}]"
    if isinstance(raw, str):
        raw = {"metric": raw}
    if not isinstance(raw, dict) or "metric" not in raw:
        raise ConfigError(f"{where} must be a metric name or a mapping with 'metric'")
    _check_keys(raw, _OBJ_KEYS, where)
    obj = Objective(str(raw["metric"]), raw.get("direction", "minimize"), raw.get("transform"),
                    raw.get("aggregate", "at_best"))
    for value, allowed, key in ((obj.direction, DIRECTIONS, "direction"),
                                (obj.transform, TRANSFORMS, "transform"),
                                (obj.aggregate, AGGREGATES, "aggregate")):
        if value not in allowed:
            raise ConfigError(f"{where}: {key} {value!r} is not one of {list(allowed)}")
    return obj


def load_space(path: str | Path, config_path: str | None = None,
               overrides: list[str] | None = None) -> StudySpec:
    """Read and validate a preset against the config built from ``config_path``/``overrides``."""
    src = Path(path)
    if not src.exists():
        raise ConfigError(f"search space file not found: {src}")
    raw = read_yaml_mapping(src, "search space")
    _check_keys(raw, _TOP_KEYS, str(src))
    trainer = raw.get("trainer")
    if trainer not in TRAINERS:
        raise ConfigError(f"{src}: 'trainer' must be one of {list(TRAINERS)}, got {trainer!r}")
    objectives = tuple(_objective(o, i, str(src)) for i, o in enumerate(raw.get("objectives") or []))
    if not objectives:
        raise ConfigError(f"{src}: at least one objective is needed")
    params = tuple(_param(p, i, str(src)) for i, p in enumerate(raw.get("params") or []))
    if not params:
        raise ConfigError(f"{src}: 'params' is empty")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise ConfigError(f"{src}: a parameter is listed twice: {names}")
    pruner = raw.get("pruner") or {"kind": "none"}
    if isinstance(pruner, str):
        pruner = {"kind": pruner}
    if pruner.get("kind") not in PRUNERS:
        raise ConfigError(f"{src}: pruner kind {pruner.get('kind')!r} is not one of {list(PRUNERS)}")
    sampler = raw.get("sampler") or ("nsga2" if len(objectives) > 1 else "tpe")
    sampler_options: dict[str, Any] = {}
    if isinstance(sampler, dict):  # {kind: tpe, n_startup_trials: 5, ...}
        sampler_options = {k: v for k, v in sampler.items() if k != "kind"}
        sampler = sampler.get("kind") or ("nsga2" if len(objectives) > 1 else "tpe")
    if sampler not in SAMPLERS:
        raise ConfigError(f"{src}: sampler {sampler!r} is not one of {list(SAMPLERS)}")
    fixed = raw.get("set") or []
    if isinstance(fixed, dict):  # also accept a mapping {key: value}
        fixed = to_overrides(fixed)
    spec = StudySpec(str(raw.get("name") or src.stem), trainer, objectives, params, sampler,
                     sampler_options, dict(pruner), tuple(str(s) for s in fixed), str(raw.get("description", "")),
                     str(src))
    _probe(spec, config_path, overrides)
    return spec


def _probe(spec: StudySpec, config_path: str | None, overrides: list[str] | None) -> None:
    """Every bound/choice must build a valid config: unknown keys and wrong types fail here,
    with config's own messages (closest key, expected type), before any trial runs."""
    try:
        load_config(config_path, [*spec.set, *(overrides or [])])
    except ConfigError as e:
        raise ConfigError(f"{spec.source}: 'set' or the base config: {e}") from e
    for p in spec.params:
        for v in p.probe_values():
            try:
                spec.apply({p.name: v}, config_path, overrides)
            except ConfigError as e:
                raise ConfigError(f"{spec.source}: param '{p.name}' = {v!r}: {e}") from e


def is_finite(values: list[float]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
