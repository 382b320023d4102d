"""``precipgen sample``: quality-gated synthetic precipitation days from a trained cVAE (seed 001
step 4), and optionally an augmented SRDRN training set (step 5).

    precipgen sample --model models:/cvae@latest --data data/prepared --mode posterior --K 2 \
        --days heavy_only --min_threshold 0.1 --temperature 1.0 --output outputs/cvae/synth \
        [--seed S] [--batch_size B] [--augment_out DIR] [--overwrite]

Output (physical units, written atomically): per-sample ``day_000123_sample_00.Y_hr_syn.npy``
/ ``.X_lr_ref.npy`` for accepted samples, ``Y_syn.npy``, ``X_ref.npy``, ``day_index.npy``,
``k_index.npy``, ``samples.nc``, ``manifest.csv`` (every sample) and a figure. The MLflow run
is tagged with the model's run id and the dataset's digest and logs the output as a dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from precipgen import tracking
from precipgen.data.store import AtomicDir, PreparedDataset
from precipgen.locks import OutputClaim, claim_output
from precipgen.steps.flags import (
    add_flags,
    config_from_args,
    empty_to_none,
    flag_overrides,
    opt,
    truthy,
)
from precipgen.synth.build import MANIFEST_FILE, SampleSettings, SynthResult, build_synthetic_set
from precipgen.synth.generate import check_compatible, open_cvae
from precipgen.synth.quality import GateThresholds, gate_summary, summarize
from precipgen.synth.select import select_days
from precipgen.synth.srdrn_export import write_augmented
from precipgen.train.distributed import pick_device

DEFAULT_MODEL = "models:/cvae@latest"
PER_SAMPLE_ARTIFACT_CAP = 64 << 20  # per-sample files go to MLflow only below this total
CONSOLIDATED_ARTIFACT_CAP = 1 << 30  # Y_syn/X_ref/samples.nc go to MLflow only below this

# named flags -> config keys (MLproject passes every parameter; "" means "use the config")
FLAGS: dict[str, tuple[str, type, str]] = {
    "data": ("data.path", str, "prepared dataset"),
    "mode": ("sampling.mode", str, "posterior | prior"),
    "K": ("sampling.K", int, "samples per day"),
    "days": ("sampling.days", str, "heavy_only | split:train|val|test | all | file:PATH"),
    "min_threshold": ("sampling.min_threshold", float,
                      "discard samples whose land total < this x the real day's"),
    "temperature": ("sampling.temperature", float, "scales the latent sigma"),
    "output": ("sampling.output_dir", str, "output directory"),
    "batch_size": ("sampling.batch_size", int, "samples per forward pass"),
    "precision": ("sampling.precision", str, "fp32 | bf16 (autocast: ~2x faster on CPUs with "
                  "AMX / AVX-512-BF16, and on GPUs)"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="checkpoint path, runs:/<id>/... or models:/cvae@<alias> "
                        f"(default {DEFAULT_MODEL})")
    add_flags(p, FLAGS)
    p.add_argument("--seed", type=opt(int), default=None, help="noise seed (default: train.seed)")
    p.add_argument("--augment_out", default=None,
                   help="also write SRDRN-layout augmented training arrays here")
    p.add_argument("--overwrite", nargs="?", const="true", default="false",
                   help="replace existing output directories")


def gate_thresholds(sc: Any) -> GateThresholds:
    """The gate thresholds of the ``sampling`` config section."""
    return GateThresholds(**{f.name: getattr(sc, f.name)
                             for f in dataclasses.fields(GateThresholds)})


def _check_target(path: Path, overwrite: bool, flag: str) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{flag} {path} already exists; pass --overwrite to replace it")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, flag_overrides(args, FLAGS))
    sc = cfg.sampling
    seed = args.seed if args.seed is not None else cfg.train.seed
    overwrite = truthy(args.overwrite)
    model_uri = empty_to_none(args.model) or DEFAULT_MODEL
    out = Path(sc.output_dir)
    aug_value = empty_to_none(args.augment_out)
    aug = Path(aug_value) if aug_value else None
    if sc.min_threshold < 0:
        raise ValueError(f"--min_threshold must be >= 0, got {sc.min_threshold}")
    if sc.temperature <= 0:
        raise ValueError(f"--temperature must be > 0, got {sc.temperature}")
    if sc.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {sc.batch_size}")
    if aug is not None and aug.resolve() == out.resolve():
        raise ValueError(f"--augment_out and --output are the same directory: {out}")

    # Every input check before the MLflow run starts: bad input leaves no run behind.
    data = tracking.resolve(cfg.data.path)
    ds = PreparedDataset.open(data.path)
    days = select_days(ds, sc.days)
    model = open_cvae(model_uri)
    check_compatible(model, ds, model_uri)
    _check_target(out, overwrite, "--output")
    if aug is not None:
        _check_target(aug, overwrite, "--augment_out")

    device = pick_device(cfg.train.device)
    with contextlib.ExitStack() as owned:
        claims = [owned.enter_context(claim_output(p, flag))
                  for p, flag in ((out, "--output"), (aug, "--augment_out")) if p is not None]
        return _sample(cfg, ds, data, model, model_uri, days, seed, out, aug, overwrite, device,
                       claims)


def _sample(cfg: Any, ds: PreparedDataset, data: tracking.Resolved, model: Any, model_uri: str,
            days: np.ndarray, seed: int, out: Path, aug: Path | None, overwrite: bool,
            device: Any, claims: list[OutputClaim]) -> int:
    sc = cfg.sampling
    st = SampleSettings(mode=sc.mode, K=sc.K, temperature=sc.temperature,
                        min_threshold=sc.min_threshold, seed=seed, batch_size=sc.batch_size,
                        precision=sc.precision,
                        wet_threshold_mm=cfg.data.wet_threshold_mm, gate=gate_thresholds(sc))
    params = {**cfg.flat(), "sampling.seed": seed, "sampling.model": model_uri,
              "sampling.augment_out": str(aug or ""), "sampling.n_days": len(days),
              "sampling.device": str(device)}
    with tracking.start_run("sample", params=params, config_yaml=cfg.to_yaml(),
                            tags={"precipgen.model_kind": "cvae"}) as run:
        for c in claims:
            c.set_run_id(run.run_id)
        run.set_lineage({"model": model.run_id, "dataset": data.run_id})
        run.set_tags({"model_uri": model_uri, "model_run_id": model.run_id,
                      "dataset_digest": ds.digest, "model_checkpoint": model.checkpoint.name})
        run.log_dataset(ds.root, ds.digest, name=ds.root.name, context="sampling",
                        profile={"n_days": ds.n_days, "hr_shape": ds.hr_shape,
                                 "lr_shape": ds.lr_shape, "channels": ds.n_channels})
        attrs = {"mode": st.mode, "temperature": st.temperature, "K": st.K, "seed": seed,
                 "min_threshold": st.min_threshold, "model_uri": model_uri,
                 "model_run_id": model.run_id or "", "sample_run_id": run.run_id,
                 "dataset": str(ds.root.resolve()), "dataset_digest": ds.digest}
        title = f"{st.mode}, T={st.temperature:g}, K={st.K}, min_threshold={st.min_threshold:g}"
        aug_ctx = AtomicDir(aug, overwrite) if aug is not None else contextlib.nullcontext(None)
        with AtomicDir(out, overwrite) as tmp, aug_ctx as tmp_aug:
            res = build_synthetic_set(tmp, ds, model, days, st, device, attrs, title)
            tracking.mark_output(tmp, run.run_id)
            aug_info = None
            if tmp_aug is not None:
                aug_info = write_augmented(
                    tmp_aug, ds, np.load(tmp / "Y_syn.npy", mmap_mode="r"),
                    np.load(tmp / "X_ref.npy", mmap_mode="r"), np.load(tmp / "day_index.npy"),
                    {"sources": {"dataset": str(ds.root.resolve()), "dataset_digest": ds.digest,
                                 "dataset_run_id": data.run_id, "model_uri": model_uri,
                                 "model_run_id": model.run_id, "sample_run_id": run.run_id,
                                 "synthetic_set": str(out.resolve()),
                                 "synthetic_digest": res.digest}},
                )
                tracking.mark_output(tmp_aug, run.run_id)
        log_results(run, res, out, aug, aug_info, st)
        print(summary_line(res, len(days), st, out, aug, aug_info, run.url, ds.sample_word))
    return 0


def log_results(run: tracking.Run, res: SynthResult, out: Path, aug: Path | None,
                aug_info: dict[str, Any] | None, st: SampleSettings) -> None:
    n = len(res.stats)
    metrics = summarize(res.stats)
    metrics["generation_seconds"] = res.generation_seconds
    metrics["writing_seconds"] = res.writing_seconds
    metrics["generation_samples_per_sec"] = n / max(res.generation_seconds, 1e-9)
    metrics["writing_samples_per_sec"] = res.n_accepted / max(res.writing_seconds, 1e-9)
    if aug_info is not None:
        metrics["augmented_n_real"] = aug_info["n_real"]
        metrics["augmented_n_synthetic"] = aug_info["n_synthetic"]
    run.log_metrics(metrics)
    run.log_artifact(out / MANIFEST_FILE, "synth")
    for name in ("day_index.npy", "k_index.npy"):
        run.log_artifact(out / name, "synth")
    if res.figure is not None:
        run.log_artifact(out / res.figure.name, "figures")
    big = [out / f for f in ("Y_syn.npy", "X_ref.npy", "samples.nc")]
    if sum(p.stat().st_size for p in big) <= CONSOLIDATED_ARTIFACT_CAP:
        for p in big:
            run.log_artifact(p, "synth")
    else:
        run.set_tags({"artifacts_note": f"consolidated arrays over {CONSOLIDATED_ARTIFACT_CAP >> 20}"
                                        f" MiB stay in {out.resolve()}"})
    per_sample = sorted(out.glob("day_*_sample_*.npy"))
    if per_sample and sum(p.stat().st_size for p in per_sample) <= PER_SAMPLE_ARTIFACT_CAP:
        for p in per_sample:
            run.log_artifact(p, "synth/samples")
    if aug is not None:
        run.log_artifact(aug / "augmentation.json", "augmented")
    run.log_dataset(out, res.digest, name=f"synthetic-{out.name}", context="output")


def summary_line(res: SynthResult, n_days: int, st: SampleSettings, out: Path, aug: Path | None,
                 aug_info: dict[str, Any] | None, url: str, word: str = "day") -> str:
    n = len(res.stats)
    rate = n / max(res.generation_seconds, 1e-9)
    aug_txt = (f"; augmented set {aug} ({aug_info['n_real']} real + {aug_info['n_synthetic']} "
               f"synthetic {word}s)" if aug is not None and aug_info else "")
    failed = gate_summary(summarize(res.stats))
    none = " -- NO sample accepted" if res.n_accepted == 0 else ""
    return (f"sample done: {res.n_accepted}/{n} samples accepted{none} ({n - res.n_accepted} "
            f"rejected; failed gates: {failed}; min_threshold={st.min_threshold:g}) from {n_days} "
            f"{word}s, {st.mode} T={st.temperature:g} K={st.K}, {rate:.1f} samples/s -> {out}"
            f"{aug_txt} | MLflow run: {url}")
