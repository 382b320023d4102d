"""Post-hoc spread calibration of a CRPS-fine-tuned 3D VAE on the validation split.

The fine-tune learns the members' spread on the training windows, where the pretrained model
is more accurate than anywhere else (it has seen them): on hourly radar the training CRPS was a
third of the validation CRPS and the ensemble came out at spread-skill 0.4. One factor on the
FiLM noise (``cond_noise_scale``) is therefore chosen where the model is scored honestly, on
the validation windows, by the same fair ``Val_CRPS`` in physical units that selects the best
epoch: a proper score, so the factor it picks trades spread against sharpness without a target
spread-skill. Same members (seeds) at every factor, so the curve is smooth. The test split is
never seen. The factor is written into the best checkpoint's hyper-parameters, so every reader
(evaluate, sample, the registered model) draws calibrated members.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from precipgen.models.vae3d import SimpleVAE3D

# 2^(k/4): 0.25 .. 8, a quarter octave apart (radar data asked for 5.7x on the coarse blocks
# and 0.7x on the full-resolution ones)
FACTORS: tuple[float, ...] = tuple(2 ** (k / 4) for k in range(-8, 13))


@dataclass
class SpreadCalibration:
    factor: float  # chosen multiplier of the fine-tuned noise on the coarse blocks
    hr_factor: float  # ... and on the full-resolution blocks
    scale: float  # the calibrated ``cond_noise_scale``
    hr_scale: float  # the calibrated ``cond_noise_hr_factor``
    before: dict[str, float]  # validation scores at factors 1, 1
    after: dict[str, float]  # ... at the chosen factors
    key: str = "Val_CRPS"  # the score minimised
    curve: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    # (coarse factor, full-res factor, score, Val_CRPS, spread-skill) of every point tried

    def summary(self, units: str) -> str:
        return (f"spread calibration on the validation split: noise x{self.factor:.2f} "
                f"(coarse blocks), x{self.hr_factor:.2f} (full-res blocks); Val_CRPS "
                f"{self.before['Val_CRPS']:.4f} -> {self.after['Val_CRPS']:.4f} {units}, "
                f"spread-skill {self.before['val_spread_skill']:.2f} -> "
                f"{self.after['val_spread_skill']:.2f}")

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["factor", "hr_factor", f"objective_{self.key}", "Val_CRPS", "val_spread_skill"])
            w.writerows(self.curve)


def _search(try_factor: Callable[[float], float], factors: Sequence[float], patience: int
            ) -> float:
    """The factor with the lowest score: from 1 upwards until ``patience`` factors in a row
    did not improve, then (if 1 was the best) downwards alike."""
    grid = sorted({*factors, 1.0})
    one = grid.index(1.0)
    scores = {1.0: try_factor(1.0)}
    for direction in (grid[one + 1:], grid[:one][::-1]):
        best, since = min(scores.values()), 0
        for f in direction:
            scores[f] = try_factor(f)
            if scores[f] < best:
                best, since = scores[f], 0
            else:
                since += 1
                if since >= patience:
                    break
        if min(scores, key=scores.__getitem__) != 1.0:
            break  # the best lies above 1: no need to look below
    return min(scores, key=scores.__getitem__)


def calibrate_noise_scale(
    model: SimpleVAE3D,
    score: Callable[[SimpleVAE3D], dict[str, float]],
    factors: Sequence[float] = FACTORS,
    patience: int = 2,
    key: str = "Val_CRPS",
) -> SpreadCalibration:
    """Choose by ``score(model)[key]`` (lower is better) a factor on the FiLM noise of the coarse decoder
    blocks (latent grid and upsampling stages: where a storm is), then one on the
    full-resolution blocks (its texture). Coarse first: the spread an unseen day needs is
    mostly in position and size; scaling pixel-level noise to supply it gave the members 7x
    the radar's small-scale power. Leaves the model at the chosen factors."""
    if model.film is None:
        raise ValueError("spread calibration needs the fine-tune's FiLM noise "
                         "(finetune.noise_channels > 0)")
    hp = model.hparams
    base, base_hr = float(hp["cond_noise_scale"]), float(hp.get("cond_noise_hr_factor", 1.0))
    results: dict[tuple[float, float], dict[str, float]] = {}

    def set_factors(coarse: float, hr: float) -> None:
        # cond_noise_scale scales every block; the full-res blocks' own factor undoes it
        hp["cond_noise_scale"] = base * coarse
        hp["cond_noise_hr_factor"] = base_hr * hr / coarse

    def trial(coarse: float, hr: float) -> float:
        if (coarse, hr) not in results:
            set_factors(coarse, hr)
            results[coarse, hr] = score(model)
            bar.update()
        return results[coarse, hr][key]

    with tqdm(desc="spread calibration", unit="trial", leave=False) as bar:
        coarse = _search(lambda f: trial(f, 1.0), factors, patience)
        hr = _search(lambda f: trial(coarse, f), factors, patience)
    set_factors(coarse, hr)
    curve = [(c, r, v[key], v["Val_CRPS"], v["val_spread_skill"])
             for (c, r), v in sorted(results.items())]
    return SpreadCalibration(coarse, hr, float(hp["cond_noise_scale"]),
                             float(hp["cond_noise_hr_factor"]), results[1.0, 1.0],
                             results[coarse, hr], key, curve)
