"""Generate, gate and write a synthetic set: the loop behind ``precipgen sample``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from precipgen.data import cf
from precipgen.data.store import PreparedDataset
from precipgen.plots import sample as plots_sample
from precipgen.synth.generate import LoadedCVAE, day_batches, generate_batch
from precipgen.synth.quality import GateThresholds, SampleStats, day_diversity, sample_stats
from precipgen.synth.writer import SynthWriter, write_manifest

FIGURE_FILE = "samples_heavy_days.png"
MANIFEST_FILE = "manifest.csv"


@dataclass
class SampleSettings:
    mode: str = "posterior"
    K: int = 2
    temperature: float = 1.0
    min_threshold: float = 0.1
    seed: int = 42
    batch_size: int = 16
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    wet_threshold_mm: float = 0.1
    per_sample_files: bool = True
    gate: GateThresholds = field(default_factory=GateThresholds)


@dataclass
class SynthResult:
    stats: list[SampleStats]
    digest: str  # of Y_syn.npy
    n_accepted: int
    generation_seconds: float  # model forward passes + gate statistics
    writing_seconds: float  # per-sample files, consolidated arrays, samples.nc, manifest
    figure: Path | None
    figure_days: list[int] = field(default_factory=list)


def land_totals(ds: PreparedDataset, days: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Real land totals (mm) of ``days``, streamed."""
    land = ds.land_mask
    out = np.empty(len(days), dtype=np.float64)
    for i in range(0, len(days), chunk):
        y = np.asarray(ds.Y_hr[days[i : i + chunk]], dtype=np.float64)[:, 0]
        out[i : i + chunk] = y[:, land].sum(axis=1)
    return out


def gate_batch(b: Any, land: np.ndarray, st: SampleSettings) -> list[SampleStats]:
    """Statistics and gates of a batch of whole days (diversity needs a day's K samples)."""
    div = {int(d): day_diversity(b.y_mm[b.days == d], b.y_real[b.days == d][0], land)
           for d in np.unique(b.days)}
    return [sample_stats(d, k, y, r, land, st.min_threshold, st.wet_threshold_mm, st.gate,
                         div[int(d)]) for d, k, y, r in zip(b.days, b.ks, b.y_mm, b.y_real)]


def build_synthetic_set(
    out_dir: Path, ds: PreparedDataset, m: LoadedCVAE, days: np.ndarray, st: SampleSettings,
    device: torch.device, attrs: dict[str, Any], figure_title: str = "",
) -> SynthResult:
    """Write the synthetic set for ``days`` into ``out_dir`` (an AtomicDir temp dir)."""
    land_np = ds.land_mask
    land = torch.from_numpy(np.ascontiguousarray(land_np)).to(device)
    m.model.to(device)
    fig_days = plots_sample.figure_days(days, ds.heavy_days, land_totals(ds, days))
    fig_samples: dict[int, list[np.ndarray]] = {int(d): [] for d in fig_days}
    fig_accept: dict[int, list[bool]] = {int(d): [] for d in fig_days}

    writer = SynthWriter(out_dir, ds.hr_shape, (ds.n_channels, *ds.lr_shape), st.per_sample_files)
    stats: list[SampleStats] = []
    t_gen = t_write = 0.0
    bar = tqdm(total=len(days) * st.K, desc=f"sampling ({st.mode})", unit="sample",
               dynamic_ncols=True)
    try:
        for chunk in day_batches(days, st.K, st.batch_size):
            t0 = time.perf_counter()
            b = generate_batch(m, ds, chunk, st.K, st.mode, st.temperature, st.seed, device, land,
                               st.precision)
            rows = gate_batch(b, land_np, st)
            t1 = time.perf_counter()
            for i, row in enumerate(rows):
                if row.accepted:
                    writer.add(row.day, row.k, b.y_mm[i], b.x_phys[i])
                if row.day in fig_samples:
                    fig_samples[row.day].append(b.y_mm[i, 0])
                    fig_accept[row.day].append(row.accepted)
            stats.extend(rows)
            t_write += time.perf_counter() - t1
            t_gen += t1 - t0
            bar.update(len(rows))
            bar.set_postfix(accepted=writer.count)
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()

    t1 = time.perf_counter()
    digest = writer.finalize(attrs, cf.Grid.of(ds))
    write_manifest(out_dir / MANIFEST_FILE, stats)
    t_write += time.perf_counter() - t1

    figure = None
    if len(fig_days):
        real = np.asarray(ds.Y_hr[fig_days], dtype=np.float32)[:, 0]
        fig = plots_sample.real_vs_samples(
            real, np.stack([np.stack(fig_samples[int(d)]) for d in fig_days]),
            np.asarray([fig_accept[int(d)] for d in fig_days]), fig_days, land_np,
            ds.normalization.units, figure_title,
        )
        figure = out_dir / FIGURE_FILE
        fig.savefig(figure, dpi=90)
    return SynthResult(stats, digest, writer.count, t_gen, t_write, figure,
                       [int(d) for d in fig_days])
