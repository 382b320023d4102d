"""CRPS fine-tuning: the deterministic 3D VAE turned generative (seed 000, ``finetune_crps``).

Loads a pretrained ``vae3d`` checkpoint (``--pretrained``: a path, ``runs:/...`` or
``models:/...``; empty = ``models:/vae3d-deterministic@latest``), freezes the encoder and
trains the decoder alone with an ensemble CRPS loss of ``crps_samples`` members (no KL).
With ``noise_channels`` > 0 every decoder block gets a zero-initialised FiLM noise pathway
(:meth:`SimpleVAE3D.enable_noise`): fine-tuning starts exactly at the deterministic model.
``crps_scales`` / ``crps_space`` choose what the loss scores (:mod:`.crps_view`).
With ``chunk_size`` below ``crps_samples`` the exact gradient is computed chunk by chunk
(:func:`precipgen.scores.crps.chunked_crps_backward`): peak memory follows the chunk, not m.

Units of the logged scores:
- ``CRPS`` (per epoch) and ``iter_CRPS`` (per iteration): the training loss, ``crps_kind``
  CRPS in *model space* (log1p + z-score), land pixels;
- ``Val_CRPS``: fair CRPS in *mm* on the validation windows (land pixels), the number to
  compare between runs (fair is unbiased whatever the ensemble size); ``val_CRPS_model``:
  the same in model space, comparable with ``CRPS`` when ``crps_kind`` is fair;
- ``val_spread`` (mean ensemble std, mm), ``val_spread_skill`` (sqrt((m+1)/m * mean var) /
  RMSE of the ensemble mean; 1 = calibrated), ``val_MAE_all``/``val_MAE_tail`` (ensemble
  mean, mm; tail: observed >= P95);
- ``generative_variance``: member variance in model space, mean over land pixels (the seed's
  test); ``is_generative`` = generative_variance > 1e-3, logged for the best model.

Outputs in ``<output_dir>/vae_generative_crps_<TIMESTAMP>/`` (also MLflow artifacts):
``checkpoints/best_model.pth``, ``checkpoints/checkpoint_epoch_*.pth``,
``crps_generative_history.csv``, ``crps_generative_iteration_history.csv``,
``generative_config.yaml``. The best model is registered as ``vae3d-crps``. With
``calibrate_noise`` the best checkpoint's noise scale is then calibrated on the validation
windows (:mod:`.spread_calibration`; ``spread_calibration.csv``, ``noise_calibration_factor``,
``Val_CRPS_calibrated``, ``val_spread_skill_calibrated``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from precipgen import tracking
from precipgen.config import Config
from precipgen.data.datasets import EpochSampler, WindowDataset, land_mask_tensor
from precipgen.data.store import PreparedDataset
from precipgen.locks import claim_output
from precipgen.models.registry import OpenedModel, open_generator, open_model
from precipgen.models.vae3d import SimpleVAE3D, build_from_checkpoint, checkpoint_extra
from precipgen.scores.crps import chunked_crps_backward, crps_ensemble, crps_loss
from precipgen.train.common import (
    Meter,
    example_days,
    log_dataset,
    masked_sum,
    p95_mm,
    run_dir,
    val_loader,
)
from precipgen.train.crps_view import CRPSView
from precipgen.train.distributed import dist_info, pick_device, seed_everything
from precipgen.train.loop import FitResult, LoopConfig, StepOutput, fit
from precipgen.train.spread_calibration import SpreadCalibration, calibrate_checkpoint
from precipgen.train.vae3d import window_batch_size

REGISTERED_NAME = "vae3d-crps"
DEFAULT_PRETRAINED = "models:/vae3d-deterministic@latest"
GENERATIVE_MIN_VARIANCE = 1e-3

TROUBLESHOOTING = """\
🚨 Troubleshooting: model still deterministic after training
   - Check if encoder is actually frozen (model.print_parameter_status())
   - Verify CRPS loss is decreasing (crps_generative_history.csv)
   - Try lower learning rate (1e-6)
   Poor diversity:
   - Increase training epochs
   - Verify no KL loss is being used
   - Check ensemble generation"""


# ------------------------------------------------------------------ the task
class CRPSTask:
    """Decoder-only CRPS training; validation scores an ensemble in physical units."""

    kind = "vae3d"
    ddp_forward = False  # calls encode/decode_members: the loop averages gradients itself

    def __init__(self, model: SimpleVAE3D, ds: PreparedDataset, cfg: Config, window_days: int,
                 device: torch.device):
        f = cfg.finetune
        self.model, self.ds, self.cfg, self.window_days = model, ds, cfg, window_days
        self.m, self.kind_crps, self.alpha = f.crps_samples, f.crps_kind, f.alpha
        self.chunk = f.chunk_size if 0 < f.chunk_size < f.crps_samples else 0
        self.land = land_mask_tensor(ds).to(device)
        self.view = CRPSView(self.land, f.crps_scales, f.crps_space, ds.normalization,
                             f.crps_increments)
        self.p95 = p95_mm(ds)
        self.val = val_loader(ds, window_days, f.batch_size)
        self.device = device
        self._train_sum, self._train_n = 0.0, 0  # epoch mean of the training CRPS

    def trainable_parameters(self):
        return self.model.get_trainable_parameters()

    def train_step(self, model: SimpleVAE3D, batch: dict[str, Tensor], epoch: int) -> StepOutput:
        with torch.no_grad():  # frozen encoder: once per batch, no graph
            mu, logvar = model.encode(batch["x"])
        seed = int(torch.randint(0, 2**31 - 1, ()).item())  # per-member noise: seed + i

        # the seed's loss on land pixels, or a multi-scale / mm view of members and truth
        view, mask = (None, self.land) if self.view.plain else (self.view, None)
        obs = batch["y"] if view is None else view(batch["y"])

        def generate(start: int, stop: int) -> Tensor:
            ens = model.decode_members(mu, logvar, start, stop, seed)
            return ens if view is None else view(ens)

        if self.chunk:
            value = chunked_crps_backward(generate, self.m, self.chunk, obs, mask,
                                          self.kind_crps, self.alpha)
            loss = None
        else:
            loss = crps_loss(generate(0, self.m), obs, mask, self.kind_crps, self.alpha)
            value = float(loss.detach())
        self._train_sum, self._train_n = self._train_sum + value, self._train_n + 1
        return StepOutput(loss, {"loss": value, "CRPS": value})

    @torch.no_grad()
    def validate(self, model: SimpleVAE3D, epoch: int) -> dict[str, float]:
        metrics = evaluate_ensemble(model, self.val, self.ds, self.land, self.p95, self.m,
                                    self.chunk or self.m, self.cfg.train.seed, self.device,
                                    self.cfg.finetune.val_max_batches)
        metrics["CRPS"] = self._train_sum / max(self._train_n, 1)
        self._train_sum, self._train_n = 0.0, 0
        return metrics

    def checkpoint_extra(self) -> dict[str, Any]:
        return checkpoint_extra(self.model, self.land, self.ds.normalization, self.window_days)

    def calibrate_best(self, path: Path) -> SpreadCalibration:
        """Calibrate the noise scale of the best checkpoint on the validation windows and
        write it back into that checkpoint (atomically)."""
        return calibrate_checkpoint(path, lambda mdl: evaluate_ensemble(
            mdl, self.val, self.ds, self.land, self.p95, self.m, self.chunk or self.m,
            self.cfg.train.seed, self.device, self.cfg.finetune.val_max_batches), self.device)


@torch.no_grad()
def evaluate_ensemble(model: SimpleVAE3D, loader: torch.utils.data.DataLoader,
                      ds: PreparedDataset, land: Tensor, p95: float, m: int, chunk: int,
                      seed: int, device: torch.device, max_batches: int = 0) -> dict[str, float]:
    """Validation scores of an m-member ensemble (same noise every epoch: comparable);
    ``max_batches`` > 0: only the first batches (quick sweeps on few CPU cores)."""
    norm, meter = ds.normalization, Meter()
    for b, batch in enumerate(loader):
        if max_batches and b >= max_batches:
            break
        x, y, y_mm = (batch[k].to(device) for k in ("x", "y", "y_mm"))
        ens = model.generate_multiple_outputs(x, m, seed=seed * 7919 + b * 1_000_003,
                                              chunk_size=chunk)
        ens_mm = norm.to_physical(ens)
        meter.add("Val_CRPS", *masked_sum(crps_ensemble(ens_mm, y_mm, "fair"), land))
        meter.add("val_CRPS_model", *masked_sum(crps_ensemble(ens, y, "fair"), land))
        meter.add("generative_variance", *masked_sum(ens.var(dim=0), land))
        var_mm = ens_mm.var(dim=0)
        mean_mm = ens_mm.mean(dim=0)
        meter.add("val_spread", *masked_sum(var_mm.sqrt(), land))
        meter.add("_var", *masked_sum(var_mm, land))
        meter.add("_se", *masked_sum((mean_mm - y_mm).pow(2), land))
        err = (mean_mm - y_mm).abs()
        meter.add("val_MAE_all", *masked_sum(err, land))
        meter.add("val_MAE_tail", *masked_sum(err, land & (y_mm >= p95)))
    out = meter.means()
    var, se = out.pop("_var"), out.pop("_se")
    out["val_spread_skill"] = math.sqrt((m + 1) / m * var) / max(math.sqrt(se), 1e-12)
    return out


# ------------------------------------------------------------------ the pretrained model
def open_pretrained(uri: str | OpenedModel | None) -> OpenedModel:
    """The pretrained vae3d (path, runs:/, models:/; empty: the latest registered
    vae3d-deterministic); opened once, fine-tuned by every tuning trial."""
    if isinstance(uri, OpenedModel):
        return uri
    return open_model(uri, ("vae3d",), default=DEFAULT_PRETRAINED, producer="pretrain_vae",
                      flag="--pretrained")


def check_fits(ck: dict[str, Any], ds: PreparedDataset) -> None:
    hp = ck["hparams"]
    want = (hp["in_channels"], list(hp["lr_shape"]), list(hp["hr_shape"]))
    got = (ds.n_channels, list(ds.lr_shape), list(ds.hr_shape))
    if want != got:
        raise ValueError(
            f"dataset {ds.root} has (C, lr grid, hr grid) = {got} but the pretrained model "
            f"expects {want}"
        )
    # The frozen encoder only understands inputs scaled as in pretraining.
    stored = ck.get("normalization")
    if stored:
        mine, theirs = ds.normalization.to_json(), dict(stored)
        keys = ("target_mean", "target_std", "channel_mean", "channel_std", "channel_log1p")
        if not all(np.allclose(mine[k], theirs[k], rtol=1e-5) for k in keys):
            raise ValueError(
                f"dataset {ds.root} has another model-space transform than the one the pretrained "
                f"model was trained with (metadata/normalization.json differs): fine-tune on the "
                f"prepared dataset the model was pretrained on"
            )


def finetune(
    cfg: Config,
    *,
    pretrained: str | OpenedModel | None = None,
    resume_dir: str | None = None,
    run: tracking.Run | None = None,
    on_epoch_end: Callable[[int, dict[str, float], torch.nn.Module], None] | None = None,
    register: bool = True,
) -> tuple[str, FitResult]:
    """Fine-tune the decoder; the library form of ``precipgen finetune_crps``.

    ``run``: log into this (already active, e.g. nested) run instead of starting one (tuning
    trials). ``on_epoch_end`` raising stops training (pruning). ``register=False`` skips the
    checkpoint artifacts and the model registry. Returns (MLflow run id, fit result).
    """
    f = cfg.finetune
    ds = PreparedDataset.open(cfg.data.path)
    opened = open_pretrained(pretrained)
    ck, uri, pretrained_run = opened.state, opened.uri, opened.run_id
    check_fits(ck, ds)
    model = build_from_checkpoint(ck)
    if f.noise_channels and model.film is None:  # a pretrained (not yet fine-tuned) model
        model.enable_noise(f.noise_channels, f.noise_grid, f.noise_scale,
                           zero_input_noise=not f.input_noise)
    window = int(ck.get("window_days", cfg.vae3d.window_days))
    train_set = WindowDataset(ds, ds.split["train"], window, stride=f.window_stride)
    batch_size = window_batch_size(len(train_set), f.batch_size, window, "finetune_crps")
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device)

    model.freeze_encoder()
    model.print_parameter_status()
    task = CRPSTask(model, ds, cfg, window, device)
    rank, world, _ = dist_info()
    sampler = EpochSampler(len(train_set), cfg.train.seed, rank=rank, world_size=world)
    # Under torchrun only rank 0 makes the run dir, the MLflow run and the files.
    out = (run_dir(f.output_dir, "vae_generative_crps", resume_dir) if rank == 0 or resume_dir
           else Path(f.output_dir))
    gen_cfg = {**cfg.to_dict(), "pretrained": uri, "pretrained_run_id": pretrained_run,
               "window_days": window, "chunked_gradient": bool(task.chunk)}
    loop_cfg = LoopConfig.from_section(
        f, out, select_metric="Val_CRPS", seed=cfg.train.seed, device=cfg.train.device,
        best_name="checkpoints/best_model.pth", last_name="checkpoints/last_model.pth",
        epoch_name="checkpoints/checkpoint_epoch_{epoch}.pth",
        log_csv="crps_generative_history.csv",
        iteration_csv="crps_generative_iteration_history.csv",
        summary=lambda e, m: f"🎯 CRPS Gen Epoch {e}: CRPS={m['CRPS']:.6f}, Val_CRPS={m['Val_CRPS']:.6f}",
    )
    if rank != 0:
        return "", fit(task, train_set, sampler, batch_size, loop_cfg, run=None,
                       resume=bool(resume_dir))
    if run is not None:  # the caller owns the run: log what start_run would have
        run.log_params(cfg.flat())
        run.log_text(cfg.to_yaml(), "config.yaml")
        run_ctx: Any = contextlib.nullcontext(run)
    else:
        resume_id = tracking.producing_run_id(out) if resume_dir else None
        run_ctx = tracking.start_run("finetune_crps", params=cfg.flat(),
                                     config_yaml=cfg.to_yaml(), run_id=resume_id)
    with claim_output(out, "run directory", inside=True) as owner, run_ctx as r:
        owner.set_run_id(r.run_id)
        (out / "generative_config.yaml").write_text(yaml.safe_dump(gen_cfg, sort_keys=False))
        tracking.mark_output(out, r.run_id)
        r.log_params({"pretrained": uri, "window_days": window})
        r.set_lineage({"pretrained": pretrained_run, "dataset": log_dataset(r, ds)})
        units = ds.normalization.units
        space = "model space" if f.crps_space == "model" else units
        scales = "" if list(f.crps_scales) == [1] else f", pooled x{list(f.crps_scales)}"
        scales += f", increments at {list(f.crps_increments)} px" if f.crps_increments else ""
        print(f"CRPS = training loss ({f.crps_kind}, {space}{scales}); Val_CRPS = fair CRPS in "
              f"{units} (m={f.crps_samples}, chunk={task.chunk or f.crps_samples})")
        res = fit(task, train_set, sampler, batch_size, loop_cfg,
                  run=r, resume=bool(resume_dir), on_epoch_end=on_epoch_end)
        if f.calibrate_noise:
            cal = task.calibrate_best(Path(res.best_path))
            cal.write_csv(out / "spread_calibration.csv")
            r.log_metrics({"noise_calibration_factor": cal.factor,
                           "Val_CRPS_calibrated": cal.after["Val_CRPS"],
                           "val_spread_skill_calibrated": cal.after["val_spread_skill"]})
            print(cal.summary(units))

        best = next((h for h in res.history if int(h["epoch"]) == res.best_epoch), {})
        variance = float(best.get("generative_variance", float("nan")))
        generative = variance > GENERATIVE_MIN_VARIANCE
        first = res.history[0]["Val_CRPS"] if res.history else float("nan")
        improvement = 100.0 * (first - res.best_metric) / first if first else float("nan")
        r.log_metrics({"generative_variance": variance, "is_generative": float(generative),
                       "best_Val_CRPS": res.best_metric, "best_epoch": res.best_epoch})
        r.set_tags({"is_generative": str(generative).lower()})
        if generative:
            print("🎉 SUCCESS: Model is now GENERATIVE!")
            print("💡 The model produces diverse outputs for the same input!")
            print(f"✅ Generative model variance: {variance:.6f}")
            print(f"✅ Val_CRPS improvement over epoch 1: {improvement:.2f}%")
        else:
            print(f"❌ Model still deterministic: generative_variance={variance:.3g} "
                  f"<= {GENERATIVE_MIN_VARIANCE}")
            print(TROUBLESHOOTING)

        for name in ("crps_generative_history.csv", "crps_generative_iteration_history.csv",
                     "generative_config.yaml", "spread_calibration.csv"):
            if (out / name).exists():
                r.log_artifact(out / name)
        if not register:  # tuning trial: checkpoints stay in `out`, nothing is registered
            print(f"finetune_crps: best Val_CRPS={res.best_metric:.6f} {units} at epoch "
                  f"{res.best_epoch}, is_generative={generative}; {out} | run {r.url}")
            return r.run_id, res
        for ckpt in sorted((out / "checkpoints").glob("*.pth")):
            if ckpt.name != "last_model.pth":  # resume state, not an output
                r.log_artifact(ckpt, "checkpoints")
        version = tracking.log_generator_model(
            res.best_path, ds.root / "metadata" / "normalization.json", REGISTERED_NAME,
            example_days(ds, window),
            {"num_samples": f.crps_samples, "mode": "generative", "temperature": 1.0, "seed": 0},
            loader=open_generator,
        )
        print(f"finetune_crps: best Val_CRPS={res.best_metric:.6f} {units} at epoch "
              f"{res.best_epoch}, is_generative={generative}; {out}; registered {REGISTERED_NAME} v{version} "
              f"(@candidate) | run {r.url}")
    return r.run_id, res
