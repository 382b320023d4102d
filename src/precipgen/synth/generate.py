"""Open a cVAE from any model URI, check it fits the dataset, and generate in batches.

Noise is drawn per (day, k) (see :mod:`.noise`) and pushed through the model's own pieces
(``encode_x``, ``posterior`` / ``prior_params``, ``decoder``) rather than ``CVAE.sample``,
whose single noise tensor would make a sample depend on its batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from precipgen.data.store import PreparedDataset
from precipgen.data.transforms import Normalization
from precipgen.models.registry import open_model
from precipgen.synth.noise import pair_normal

log = logging.getLogger(__name__)


@dataclass
class LoadedCVAE:
    model: Any  # precipgen.models.cvae.CVAE, eval mode
    norm: Normalization  # the model's own (what it was trained with)
    statics: torch.Tensor  # (K, H, W) model space, as trained
    hparams: dict[str, Any]
    channel_names: list[str]
    checkpoint: Path
    run_id: str | None

    @property
    def d_z(self) -> int:
        return int(self.hparams["d_z"])

    def describe(self) -> str:
        hp = self.hparams
        (h, w), (H, W) = hp["lr_shape"], hp["hr_shape"]
        return f"high-res {H}x{W}, low-res {h}x{w}, C={hp['in_channels']}, statics={hp['n_statics']}"


def open_cvae(uri: str) -> LoadedCVAE:
    """``uri``: a checkpoint path, a directory holding one, ``runs:/...`` or ``models:/...``."""
    m = open_model(uri, ("cvae",))
    g, ck = m.generator, m.state
    return LoadedCVAE(
        model=g.model, norm=g.norm, statics=g.statics, hparams=m.hparams,
        channel_names=list(ck.get("channel_names") or g.norm.channel_names),
        checkpoint=m.checkpoint, run_id=m.run_id,
    )


def check_compatible(m: LoadedCVAE, ds: PreparedDataset, uri: str) -> None:
    """A model trained on another grid or channel count is an error naming both."""
    hp = m.hparams
    mine = (tuple(hp["hr_shape"]), tuple(hp["lr_shape"]), int(hp["in_channels"]), int(hp["n_statics"]))
    theirs = (tuple(ds.hr_shape), tuple(ds.lr_shape), ds.n_channels, len(ds.static_names))
    if mine != theirs:
        (H, W), (h, w), C, K = theirs
        where = uri if Path(uri) == m.checkpoint else f"{uri} ({m.checkpoint})"
        raise ValueError(
            f"model {where} was trained on {m.describe()} but dataset {ds.root} "
            f"has high-res {H}x{W}, low-res {h}x{w}, C={C}, statics={K}"
        )
    if m.channel_names != ds.channel_names:
        log.warning("model channels %s differ from dataset channels %s (same count: continuing)",
                    m.channel_names, ds.channel_names)


@dataclass
class Batch:
    days: np.ndarray  # (n,) day id of each sample
    ks: np.ndarray  # (n,) sample number within its day
    y_mm: np.ndarray  # (n, 1, H, W) synthetic, physical, sea 0
    x_phys: np.ndarray  # (n, C, h, w) the real day's predictors
    y_real: np.ndarray  # (n, 1, H, W) the real day


def day_batches(days: np.ndarray, K: int, batch_size: int) -> Iterator[np.ndarray]:
    """Whole days per forward pass: ``max(1, batch_size // K)`` days x K samples."""
    per = max(1, batch_size // K)
    for i in range(0, len(days), per):
        yield days[i : i + per]


@torch.no_grad()
def generate_batch(m: LoadedCVAE, ds: PreparedDataset, days: np.ndarray, K: int, mode: str,
                   temperature: float, seed: int, device: torch.device,
                   land: torch.Tensor, precision: str = "fp32") -> Batch:
    """K samples for each of ``days`` (z = mu + temperature * sigma * eps, eps per (day, k));
    ``precision`` bf16 runs the network under bfloat16 autocast (the noise stays fp32)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        return _generate(m, ds, days, K, mode, temperature, seed, device, land)


def _generate(m: LoadedCVAE, ds: PreparedDataset, days: np.ndarray, K: int, mode: str,
              temperature: float, seed: int, device: torch.device, land: torch.Tensor) -> Batch:
    x_phys = np.asarray(ds.X_lr[days], dtype=np.float32)
    y_real = np.asarray(ds.Y_hr[days], dtype=np.float32)
    model = m.model
    x = m.norm.predictors_to_model(torch.from_numpy(x_phys)).to(device)
    statics = m.statics.to(device)
    hx, s = model.encode_x(x, statics)
    if mode == "posterior":
        y = m.norm.to_model(torch.from_numpy(y_real)).to(device)
        mu, logvar = model.posterior(y, hx, s)
    else:
        mu, logvar = model.prior_params(hx)
    mu, logvar = mu.float(), logvar.float()  # the latent draw in fp32 under bf16 autocast too
    rep_days = np.repeat(days, K)
    rep_ks = np.tile(np.arange(K), len(days))
    n_noise = model.decoder.noise_dim  # decoder noise maps: drawn from the same (day, k) stream
    eps = pair_normal(seed, rep_days, rep_ks, m.d_z + n_noise).to(device=device, dtype=mu.dtype)
    idx = torch.arange(len(days), device=device).repeat_interleave(K)
    z = mu[idx] + temperature * (0.5 * logvar[idx]).exp() * eps[:, : m.d_z]
    hx_rep = type(hx)(hx.map[idx], hx.vec[idx])
    y_hat = model.decoder(z, hx_rep, s[idx], noise=eps[:, m.d_z :] if n_noise else None)
    y_mm = (m.norm.to_physical(y_hat.float()) * land).cpu().numpy()
    return Batch(rep_days, rep_ks, y_mm, np.repeat(x_phys, K, axis=0), np.repeat(y_real, K, axis=0))
