"""Training losses: the cVAE loss (seed 001) and the 3D VAE's KL term.

The cVAE loss: ``L_total = L_rec + lambda_mass * L_mass + beta * L_KL``.

- ``L_rec = lambda_base * MAE_all + lambda_ext * MAE_extreme`` in model space; MAE_extreme is
  over pixels whose *target* is >= P95 (``thresholds.json``, mm), converted to model space by
  :meth:`Normalization.threshold_to_model` -- never compared in the wrong space.
- ``L_mass = |sum_land(Y_true) - sum_land(Y_hat)| / n_land`` per day in physical units (both
  fields back-transformed here), averaged over the batch.
- ``L_KL`` per day (summed over latent dims, averaged over the batch), against N(0, I) or the
  conditional prior p(z | X, S); optional free bits per latent dimension.
- ``beta`` rises linearly from 0 (epoch 1) to ``beta_kl`` (epoch ``warmup_epochs + 1``).
- Sample-based terms (issue 13: a mean-seeking loss under-disperses the samples):
  ``recon="crps"`` replaces the MAEs of ``L_rec`` by fair CRPS of several posterior samples
  (all pixels) and, for the extreme term, their threshold-weighted CRPS above P95 (proper); ``lambda_prior_crps`` adds the fair
  CRPS of several draws from the prior p(z | X, S) -- what sampling from X alone uses.
  Both score ``crps_space`` (model space, or mm: symmetric member noise in log space is a wet
  bias in mm) on the land pixels and, with ``crps_scales``, on average-pooled fields too (the
  pixel CRPS alone cannot tell pixel noise from coherent structure: issue 13's spectral excess);
  see :mod:`precipgen.train.crps_view`.
- Every term is taken over land pixels only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from precipgen.data.transforms import Normalization
from precipgen.scores.crps import crps_ensemble
from precipgen.train.crps_view import CRPSView


def kl_per_dim(mu: Tensor, logvar: Tensor, prior_mu: Tensor | None = None,
               prior_logvar: Tensor | None = None) -> Tensor:
    """KL(N(mu, s^2) || N(pm, ps^2)) per latent dimension, shape ``(B, d_z)``.

    Standard prior: ``-0.5 * (1 + logvar - mu^2 - exp(logvar))``.
    General: ``0.5 * (plv - lv + (exp(lv) + (mu - pm)^2) / exp(plv) - 1)``.
    """
    if prior_mu is None or prior_logvar is None:
        return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    return 0.5 * (prior_logvar - logvar
                  + (logvar.exp() + (mu - prior_mu).pow(2)) / prior_logvar.exp() - 1)


def beta_schedule(epoch: int, beta_kl: float, warmup_epochs: int) -> float:
    """Linear warm-up: 0 at epoch 1, ``beta_kl`` from epoch ``warmup_epochs + 1`` on."""
    if warmup_epochs <= 0:
        return beta_kl
    return beta_kl * min(1.0, max(0, epoch - 1) / warmup_epochs)


def masked_mean(v: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``v`` over the True pixels of ``mask`` (0 when there are none, keeping the graph)."""
    mask = mask.expand_as(v)
    n = mask.sum()
    return (v * mask).sum() / n.clamp_min(1)


@dataclass
class CVAELoss:
    norm: Normalization
    p95_mm: float  # from thresholds.json, physical units
    land: Tensor  # (H, W) bool
    lambda_base: float = 1.0
    lambda_ext: float = 3.0
    lambda_mass: float = 0.1
    beta_kl: float = 0.5
    warmup_epochs: int = 10
    free_bits: float = 0.0
    conditional_prior: bool = False
    recon: str = "mae"
    lambda_prior_crps: float = 0.0
    crps_space: str = "model"
    crps_scales: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        self.p95_model = self.norm.threshold_to_model(self.p95_mm)
        self._views: dict[torch.device, CRPSView] = {}

    def _ens_crps(self, ens: Tensor, y: Tensor) -> Tensor:
        """Mean fair CRPS of ``(m, B, 1, H, W)`` members against ``y`` in the scored view."""
        view = self._views.get(y.device)
        if view is None:
            view = self._views[y.device] = CRPSView(self.land.to(y.device), list(self.crps_scales),
                                                    self.crps_space, self.norm)
        return crps_ensemble(view(ens), view(y), kind="fair").mean()

    def beta(self, epoch: int) -> float:
        return beta_schedule(epoch, self.beta_kl, self.warmup_epochs)

    def __call__(self, y_hat: Tensor, y: Tensor, mu: Tensor, logvar: Tensor,
                 prior_mu: Tensor | None, prior_logvar: Tensor | None, epoch: int,
                 post_ens: Tensor | None = None, prior_ens: Tensor | None = None
                 ) -> dict[str, Tensor]:
        """All tensors in model space; ``y``/``y_hat`` are ``(B, 1, H, W)``, ensembles
        ``(m, B, 1, H, W)``: ``post_ens`` (needed when ``recon="crps"``) and ``prior_ens``
        (needed when ``lambda_prior_crps > 0``). Returns the total and every term (``loss,
        L_rec, MAE_all, MAE_extreme, L_mass, KL, CRPS_prior, beta``)."""
        land = self.land.to(y.device)
        tail = land & (y >= self.p95_model)
        err = (y_hat - y).abs()
        mae_all = masked_mean(err, land)
        mae_ext = masked_mean(err, tail)
        if self.recon == "crps":
            if post_ens is None:
                raise ValueError("loss.recon='crps' needs posterior samples (post_ens)")
            # The extreme term is the threshold-weighted CRPS (chaining v(x) = max(x, P95), over
            # all land pixels): proper, unlike the CRPS over pixels where the *observed* value is
            # >= P95, which rewards members that are wet everywhere (issue 13's mass bias).
            if self.crps_space == "mm":
                ens_t, y_t, t = self.norm.to_physical(post_ens), self.norm.to_physical(y), self.p95_mm
            else:
                ens_t, y_t, t = post_ens, y, self.p95_model
            c_tw = crps_ensemble(ens_t.clamp_min(t), y_t.clamp_min(t), kind="fair")
            l_rec = (self.lambda_base * self._ens_crps(post_ens, y)
                     + self.lambda_ext * masked_mean(c_tw, land))
        else:
            l_rec = self.lambda_base * mae_all + self.lambda_ext * mae_ext

        n_land = land.sum().clamp_min(1)
        mass_true = (self.norm.to_physical(y) * land).sum(dim=(1, 2, 3))
        mass_pred = (self.norm.to_physical(y_hat) * land).sum(dim=(1, 2, 3))
        l_mass = ((mass_true - mass_pred).abs() / n_land).mean()

        if not self.conditional_prior:
            prior_mu = prior_logvar = None
        kl_d = kl_per_dim(mu, logvar, prior_mu, prior_logvar)  # (B, d_z)
        kl = kl_d.sum(dim=1).mean()
        # Free bits (Kingma et al. 2016): no pressure below free_bits nats per dimension.
        kl_pen = kl_d.mean(dim=0).clamp_min(self.free_bits).sum() if self.free_bits > 0 else kl
        beta = self.beta(epoch)
        total = l_rec + self.lambda_mass * l_mass + beta * kl_pen
        crps_prior = torch.zeros((), device=y.device)
        if self.lambda_prior_crps > 0:
            if prior_ens is None:
                raise ValueError("loss.lambda_prior_crps > 0 needs samples from the prior (prior_ens)")
            # all land pixels alike: weighting pixels by the *observed* value (as MAE_extreme
            # does) is improper and would push the prior's samples wet
            crps_prior = self._ens_crps(prior_ens, y)
            total = total + self.lambda_prior_crps * crps_prior
        return {"loss": total, "L_rec": l_rec, "MAE_all": mae_all, "MAE_extreme": mae_ext,
                "L_mass": l_mass, "KL": kl, "CRPS_prior": crps_prior, "beta": torch.tensor(beta)}


    def deterministic_terms(self, y_hat: Tensor, y: Tensor, mu: Tensor, logvar: Tensor,
                            prior_mu: Tensor | None, prior_logvar: Tensor | None,
                            epoch: int) -> dict[str, Tensor]:
        """The loss with the MAE reconstruction and no sample terms: what validation compares
        across settings (val_loss keeps one meaning whatever ``recon`` trains with)."""
        plain = CVAELoss(self.norm, self.p95_mm, self.land, self.lambda_base, self.lambda_ext,
                         self.lambda_mass, self.beta_kl, self.warmup_epochs, self.free_bits,
                         self.conditional_prior)
        return plain(y_hat, y, mu, logvar, prior_mu, prior_logvar, epoch)


def kl_per_element(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) of the 3D VAE, averaged over latent elements (and the batch)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
