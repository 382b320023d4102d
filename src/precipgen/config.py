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
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).resolve().parent / "configs"  # package data: default, quick, ...
DEFAULT_CONFIG = PROFILE_DIR / "default.yaml"


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
    noise_channels: int = 0  # Gaussian noise maps fed to the decoder
    noise_grid: str = "both"  # where noise maps enter the decoder: both | coarse | stages | all


@dataclass
class LossConfig:
    lambda_base: float = 1.0
    lambda_ext: float = 3.0
    lambda_mass: float = 0.1
    beta_kl: float = 0.5
    warmup_epochs: int = 10
    free_bits: float = 0.0  # nats per latent dimension below which KL is not penalised
    recon: str = "mae"  # mae (posterior mean sample) | crps (crps_samples posterior samples)
    lambda_prior_crps: float = 0.0  # weight of the CRPS of crps_samples draws from the prior
    crps_samples: int = 4  # members per input for the sample-based terms (>= 2)
    # What the sample-based CRPS terms score (as finetune.crps_*): model space (log1p z-score)
    # or mm, on pixels and on fields average-pooled over k x k (penalises pixel noise).
    crps_space: str = "model"
    crps_scales: list[int] = field(default_factory=lambda: [1])


@dataclass
class LoopSection:
    """What the shared training loop needs, declared once; each trainer's section below sets
    its own defaults (the seeds') and adds its own keys."""

    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 disables
    checkpoint_interval: int = 5  # epochs between numbered checkpoints; 0 disables
    early_stopping_patience: int = 10  # epochs without improvement; 0 disables
    # Learning rate x lr_decay_factor after every lr_decay_patience epochs without improvement
    # (reduce on plateau; 0 disables): a noisy validation curve settles instead of wandering.
    lr_decay_patience: int = 0
    lr_decay_factor: float = 0.3
    max_batches_per_epoch: int = 0  # 0 = full epoch (quick profiles cap it)
    output_dir: str = "outputs"


@dataclass
class TrainConfig(LoopSection):
    """The cVAE's training (seed 001), plus the seed and device every trainer uses."""

    epochs: int = 80
    batch_size: int = 6
    lr: float = 1e-3
    weight_decay: float = 1e-4
    early_stopping_patience: int = 15
    output_dir: str = "outputs/cvae"
    amp: bool = True  # only takes effect on CUDA
    select_metric: str = "val_MAE_tail"  # best checkpoint / early stopping metric (lower is better)
    heavy_oversample: float = 4.0  # sampling weight of heavy days relative to the others
    val_samples: int = 8  # members generated from X alone for val_CRPS
    figure_interval: int = 5  # epochs between validation figures; 0 disables
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class SamplingConfig:
    mode: str = "posterior"  # posterior | prior
    K: int = 2
    days: str = "heavy_only"  # heavy_only | split:train|val|test | all | file:PATH
    min_threshold: float = 0.1
    # the quality gate beyond min_threshold (synth/quality.py; 0 disables a gate)
    max_mass_ratio: float = 0.0
    max_wet_ratio: float = 0.0
    min_p99_ratio: float = 0.0
    max_p99_ratio: float = 0.0
    min_diversity: float = 0.0
    max_source_corr: float = 0.0
    temperature: float = 1.0
    batch_size: int = 16
    # bf16: the model's forward passes under bfloat16 autocast (AMX/AVX-512-BF16 CPUs, GPUs):
    # ~2x the samples/s here (bench/bench_sample.py), fields within bf16 rounding of fp32
    precision: str = "fp32"
    output_dir: str = "outputs/cvae/synth"


@dataclass
class VAE3DConfig(LoopSection):
    """The deterministic 3D VAE (seed 000) and its pretraining."""

    epochs: int = 50
    batch_size: int = 4
    lr: float = 1e-4
    output_dir: str = "outputs/vae3d"
    window_days: int = 8
    window_stride: int = 1  # days between training windows; = window_days: each day once an epoch
    base_filters: int = 16
    latent_channels: int = 8
    # decoder: learned terrain maps and their products with the weather features (0 = the
    # seed's plain concatenation of the statics); SimpleVAE3D's terrain_features
    terrain_features: int = 0
    beta_kl: float = 1e-3


@dataclass
class FinetuneConfig(LoopSection):
    """CRPS fine-tuning of the 3D VAE decoder (seed 000 defaults)."""

    epochs: int = 30
    batch_size: int = 4
    lr: float = 1e-5
    output_dir: str = "experiments_generative_crps"
    crps_samples: int = 20
    window_stride: int = 1  # days between training windows (the window is the pretrained one's)
    chunk_size: int = 0  # 0 = all members at once; below crps_samples: chunked exact gradient
    crps_kind: str = "fair"  # fair | standard | almost_fair
    alpha: float = 0.95  # almost-fair blend
    # noise at every decoder scale (zero-initialised FiLM on each GroupNorm); 0 = the seed's
    # input noise channels only
    noise_channels: int = 8
    # coarse (latent grid, smooth) | global | pixel (white) | mixed (smooth on the coarse
    # blocks, white on the full-res ones: calibrating the coarse noise adds no texture)
    noise_grid: str = "coarse"
    noise_scale: float = 1.0  # std of the FiLM noise
    input_noise: bool = False  # keep the seed's noise input channels (not a zero-effect start)
    crps_scales: list[int] = field(default_factory=lambda: [1])  # pooling factors scored
    crps_increments: list[int] = field(default_factory=list)  # pixel lags of scored differences
    crps_space: str = "model"  # model (log1p z-score) | mm
    val_max_batches: int = 0  # 0 = every validation window; > 0 caps Val_CRPS's batches
    # after training, scale the FiLM noise by the factor with the best Val_CRPS on the
    # validation split (train/spread_calibration.py): spread learned on seen windows is too narrow
    calibrate_noise: bool = False


@dataclass
class SRDRNConfig(LoopSection):
    """The deterministic SRDRN-style downscaler of the augmentation experiment (evaluate)."""

    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-4
    checkpoint_interval: int = 0
    early_stopping_patience: int = 0
    max_batches_per_epoch: int = 0  # 0 = one pass over the real training days
    output_dir: str = "outputs/srdrn"
    filters: int = 64
    res_blocks: int = 16


@dataclass
class AugmentationConfig:
    """The augmentation experiment (evaluate --augmentation): how synthetic days are mixed
    into SRDRN's training, and how many training seeds per arm."""

    mixing: str = "B"  # A: k synthetic samples per real heavy day per epoch | B: concatenated
    k: int = 1  # option A: synthetic samples of a real heavy day added each time it is drawn
    ratio: float = 0.0  # option B: synthetic items per real day (0 = every accepted sample)
    n_seeds: int = 3  # SRDRN training seeds per arm; the CI covers seeds and days


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
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)

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


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def config_path(name: str | Path) -> Path:
    """A config file: the path as given, else a shipped profile by name (``quick``,
    ``configs/quick.yaml``), so a profile works from any directory and any install."""
    p = Path(name).expanduser()
    if p.exists():
        return p
    if not p.is_absolute():
        stem = p.name[:-5] if p.name.endswith(".yaml") else p.name
        if p.parent in (Path("."), Path("configs")) and (PROFILE_DIR / f"{stem}.yaml").is_file():
            return PROFILE_DIR / f"{stem}.yaml"
    raise ConfigError(f"config file not found: {p} (shipped profiles: {', '.join(profile_names())})")


def read_yaml_mapping(src: Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file whose top level is a mapping; a clear ConfigError for anything else."""
    if src.is_dir():
        raise ConfigError(f"{what} {src} is a directory; expected a YAML file")
    try:
        loaded = yaml.safe_load(src.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {src} is not valid YAML: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {src} cannot be read: {e}") from e
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {src}: the top level must be a mapping of sections "
                          f"(data:, train:, ...), got a {type(loaded).__name__}")
    return loaded


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> Config:
    """Defaults <- the shipped default.yaml (or ``path``) <- overrides."""
    data: dict[str, Any] = {}
    src = config_path(path) if path else DEFAULT_CONFIG
    if src.exists():
        data = deep_merge(data, read_yaml_mapping(src))
    for item in overrides or []:
        data = deep_merge(data, parse_override(item))
    cfg = _build(Config, data, "")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express (before any run or file is created)."""
    for key, value in cfg.flat().items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{key}': {value!r} is not a finite number")
    choices = {
        "model.prior": (cfg.model.prior, {"standard", "conditional"}),
        "model.noise_grid": (cfg.model.noise_grid, {"both", "coarse", "stages", "all"}),
        "sampling.mode": (cfg.sampling.mode, {"posterior", "prior"}),
        "sampling.precision": (cfg.sampling.precision, {"fp32", "bf16"}),
        "loss.recon": (cfg.loss.recon, {"mae", "crps"}),
        "augmentation.mixing": (cfg.augmentation.mixing, {"A", "B"}),
        "finetune.crps_kind": (cfg.finetune.crps_kind, {"fair", "standard", "almost_fair"}),
        "finetune.noise_grid": (cfg.finetune.noise_grid, {"coarse", "global", "pixel", "mixed"}),
        "finetune.crps_space": (cfg.finetune.crps_space, {"model", "mm"}),
        "loss.crps_space": (cfg.loss.crps_space, {"model", "mm"}),
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
        "loss.crps_samples": cfg.loss.crps_samples - 1,  # >= 2 members
        "augmentation.n_seeds": cfg.augmentation.n_seeds,
        "augmentation.k": cfg.augmentation.k,
    }.items():
        if value < 1:
            raise ConfigError(f"config key '{key}' must be >= 1, got {value}")
    if cfg.vae3d.terrain_features < 0:
        raise ConfigError(f"config key 'vae3d.terrain_features' must be >= 0, got "
                          f"{cfg.vae3d.terrain_features}")
    if cfg.finetune.calibrate_noise and cfg.finetune.noise_channels < 1:
        raise ConfigError("config key 'finetune.calibrate_noise' needs finetune.noise_channels "
                          ">= 1 (it scales the FiLM noise)")
    if cfg.augmentation.ratio < 0:
        raise ConfigError(f"config key 'augmentation.ratio' must be >= 0, got {cfg.augmentation.ratio}")
    if any(int(lag) < 1 for lag in cfg.finetune.crps_increments):
        raise ConfigError("config key 'finetune.crps_increments' must hold pixel lags >= 1, got "
                          f"{cfg.finetune.crps_increments}")
    for key in ("train.lr", "vae3d.lr", "finetune.lr", "srdrn.lr"):
        value = cfg.flat()[key]
        if value <= 0:
            raise ConfigError(f"config key '{key}' must be > 0, got {value}")
