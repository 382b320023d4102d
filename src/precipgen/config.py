"""Typed configuration: YAML files + ``--set a.b=value`` overrides, validated strictly.

One root :class:`Config` with a section per concern (as in the seed's ``config.yaml``:
data, model, loss, train, sampling) plus sections for the 3D VAE and its CRPS fine-tuning.
Each step reads only the sections it needs. Unknown keys are errors that name the key path
and the closest valid key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"


class ConfigError(ValueError):
    """A configuration problem; the message names the key path."""


@dataclass
class DataConfig:
    path: str = "data/prepared"  # prepared dataset directory consumed by training steps
    val_fraction: float = 0.15  # contiguous time blocks, never random days
    test_fraction: float = 0.15
    heavy_percentile: float = 95.0  # heavy day: land-mean precip >= this percentile of train days
    dry_threshold_mm: float = 0.1  # dry day: land-mean precip below this (mm per step)
    wet_threshold_mm: float = 0.1  # wet pixel: precip above this (mm per step)
    num_workers: int = 0


@dataclass
class ModelConfig:
    """The conditional VAE (seed 001)."""

    d_z: int = 64
    base_filters: int = 64
    d_x: int = 128
    d_y: int = 256
    prior: str = "standard"  # standard | conditional


@dataclass
class LossConfig:
    lambda_base: float = 1.0
    lambda_ext: float = 3.0
    lambda_mass: float = 0.1
    beta_kl: float = 0.5
    warmup_epochs: int = 10
    free_bits: float = 0.0  # nats per latent dimension below which KL is not penalised


@dataclass
class TrainConfig:
    epochs: int = 80
    batch_size: int = 6
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    amp: bool = True  # only takes effect on CUDA
    checkpoint_interval: int = 5
    early_stopping_patience: int = 15  # epochs without improvement; 0 disables
    select_metric: str = "val_MAE_tail"  # best checkpoint / early stopping metric (lower is better)
    heavy_oversample: float = 4.0  # sampling weight of heavy days relative to the others
    val_samples: int = 8  # members generated from X alone for val_CRPS
    figure_interval: int = 5  # epochs between validation figures; 0 disables
    max_batches_per_epoch: int = 0  # 0 = full epoch (quick profiles cap it)
    output_dir: str = "outputs/cvae"
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class SamplingConfig:
    mode: str = "posterior"  # posterior | prior
    K: int = 2
    days: str = "heavy_only"  # heavy_only | split:train|val|test | all | file:PATH
    min_threshold: float = 0.1
    temperature: float = 1.0
    batch_size: int = 16
    output_dir: str = "outputs/cvae/synth"


@dataclass
class VAE3DConfig:
    """The deterministic 3D VAE (seed 000) and its pretraining."""

    window_days: int = 8
    base_filters: int = 16
    latent_channels: int = 8
    beta_kl: float = 1e-3
    epochs: int = 50
    batch_size: int = 4
    lr: float = 1e-4
    grad_clip: float = 1.0
    checkpoint_interval: int = 5
    early_stopping_patience: int = 10
    max_batches_per_epoch: int = 0
    output_dir: str = "outputs/vae3d"


@dataclass
class FinetuneConfig:
    """CRPS fine-tuning of the 3D VAE decoder (seed 000 defaults)."""

    epochs: int = 30
    batch_size: int = 4
    lr: float = 1e-5
    crps_samples: int = 20
    chunk_size: int = 0  # 0 = all members at once; below crps_samples: chunked exact gradient
    crps_kind: str = "fair"  # fair | standard | almost_fair
    alpha: float = 0.95  # almost-fair blend
    grad_clip: float = 1.0
    checkpoint_interval: int = 5
    early_stopping_patience: int = 10
    max_batches_per_epoch: int = 0
    output_dir: str = "experiments_generative_crps"


@dataclass
class SRDRNConfig:
    """The deterministic SRDRN-style downscaler of the augmentation experiment (evaluate)."""

    filters: int = 64
    res_blocks: int = 16
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-4
    max_batches_per_epoch: int = 0  # 0 = one pass over the real training days
    output_dir: str = "outputs/srdrn"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    vae3d: VAE3DConfig = field(default_factory=VAE3DConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    srdrn: SRDRNConfig = field(default_factory=SRDRNConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"loss.lambda_ext": 3.0, ...}`` for MLflow params."""
        return flatten(self.to_dict())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _closest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.0)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check/convert one leaf value against its annotated type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(value, arg, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"config key '{path}': expected {tp}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            with contextlib.suppress(ValueError):
                return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, list):
            (inner,) = typing.get_args(tp) or (Any,)
            return [_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    elif tp is Any:
        return value
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(
        f"config key '{path}': expected {name}, got {type(value).__name__} ({value!r})"
    )


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'{_closest(str(key), names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, path + ".")
        else:
            kwargs[key] = _coerce(value, tp, path)
    return cls(**kwargs)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``"loss.lambda_ext=5"`` -> ``{"loss": {"lambda_ext": 5}}`` (value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like section.key=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{item}' has an empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
    nested: dict[str, Any] = {}
    cur = nested
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return nested


def split_overrides(text: str | None) -> list[str]:
    """MLproject passes overrides as one string: ``"a.b=1 c.d=x"`` (space or comma separated)."""
    if not text:
        return []
    return [t for t in text.replace(",", " ").split() if t]


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> Config:
    """Defaults <- configs/default.yaml (or ``path``) <- overrides."""
    data: dict[str, Any] = {}
    src = Path(path) if path else DEFAULT_CONFIG
    if path and not src.exists():
        raise ConfigError(f"config file not found: {src}")
    if src.exists():
        try:
            loaded = yaml.safe_load(src.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {src} is not valid YAML: {e}") from e
        data = deep_merge(data, loaded)
    for item in overrides or []:
        data = deep_merge(data, parse_override(item))
    cfg = _build(Config, data, "")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express."""
    choices = {
        "model.prior": (cfg.model.prior, {"standard", "conditional"}),
        "sampling.mode": (cfg.sampling.mode, {"posterior", "prior"}),
        "finetune.crps_kind": (cfg.finetune.crps_kind, {"fair", "standard", "almost_fair"}),
        "train.device": (cfg.train.device, {"auto", "cpu", "cuda"}),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {sorted(allowed)}")
    if not 0 < cfg.data.val_fraction + cfg.data.test_fraction < 1:
        raise ConfigError("config keys 'data.val_fraction' + 'data.test_fraction' must be in (0, 1)")
    for key, value in {
        "train.batch_size": cfg.train.batch_size,
        "train.epochs": cfg.train.epochs,
        "vae3d.window_days": cfg.vae3d.window_days,
        "finetune.crps_samples": cfg.finetune.crps_samples,
        "sampling.K": cfg.sampling.K,
    }.items():
        if value < 1:
            raise ConfigError(f"config key '{key}' must be >= 1, got {value}")
