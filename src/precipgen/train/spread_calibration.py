"""Post-hoc spread calibration of a CRPS-fine-tuned 3D VAE on the validation split.

The fine-tune learns the members' spread on the training windows, where the pretrained model
is more accurate than anywhere else (it has seen them): on hourly radar the training CRPS was a
third of the validation CRPS and the ensemble came out at spread-skill 0.4. One factor on the
FiLM noise of the coarse decoder blocks (the latent grid and the upsampling stages: where a
storm is and how large) is therefore chosen where the model is scored honestly, on the
validation windows, by the fair ``Val_CRPS`` in physical units that also selects the best
epoch: a proper score, so the factor trades spread against sharpness without a target
spread-skill. The full-resolution blocks keep their trained noise: the texture learned with
the increments CRPS is local and carries over to unseen days, the position errors do not
(scaling every block instead gave the radar members 7x the truth's small-scale power; letting
the score pick the full-res factor too drove it to an edge of the grid, up with the pixel CRPS,
down with the pooled/increment terms; bench/results/crps_mrms.md). Same members (seeds) at
every factor, so the curve is smooth; the test split is never seen. The factor is written into
the best checkpoint's hyper-parameters, so every reader (evaluate, sample, the registered
model) draws calibrated members.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from precipgen.models.checkpoint import load_checkpoint, save_checkpoint
from precipgen.models.vae3d import SimpleVAE3D, build_from_checkpoint

# 2^(k/4): 0.5 .. 8, a quarter octave apart (radar data asked for 5.7x)
FACTORS: tuple[float, ...] = tuple(2 ** (k / 4) for k in range(-4, 13))


@dataclass
class SpreadCalibration:
    factor: float  # chosen multiplier of the coarse blocks' noise
    scale: float  # the calibrated ``cond_noise_scale``
    hr_factor: float  # the ``cond_noise_hr_factor`` that keeps the full-res noise as trained
    before: dict[str, float]  # validation scores at factor 1
    after: dict[str, float]  # ... at the chosen factor
    curve: list[tuple[float, float, float]] = field(default_factory=list)  # factor, CRPS, ss

    def summary(self, units: str) -> str:
        return (f"spread calibration on the validation split: coarse-block noise "
                f"x{self.factor:.2f}; Val_CRPS {self.before['Val_CRPS']:.4f} -> "
                f"{self.after['Val_CRPS']:.4f} {units}, spread-skill "
                f"{self.before['val_spread_skill']:.2f} -> {self.after['val_spread_skill']:.2f}")

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["factor", "Val_CRPS", "val_spread_skill"])
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
) -> SpreadCalibration:
    """Scale the coarse decoder blocks' FiLM noise by the factor of ``factors`` with the
    lowest ``score(model)["Val_CRPS"]``, the full-resolution blocks' noise unchanged. Leaves
    the model at the chosen factor."""
    if model.film is None:
        raise ValueError("spread calibration needs the fine-tune's FiLM noise "
                         "(finetune.noise_channels > 0)")
    hp = model.hparams
    base, base_hr = float(hp["cond_noise_scale"]), float(hp.get("cond_noise_hr_factor", 1.0))
    results: dict[float, dict[str, float]] = {}

    def set_factor(f: float) -> None:
        # cond_noise_scale scales every block; the full-res blocks' own factor undoes it
        hp["cond_noise_scale"], hp["cond_noise_hr_factor"] = base * f, base_hr / f

    def trial(f: float) -> float:
        set_factor(f)
        results[f] = score(model)
        bar.update()
        return results[f]["Val_CRPS"]

    with tqdm(desc="spread calibration", unit="factor", leave=False) as bar:
        chosen = _search(trial, factors, patience)
    set_factor(chosen)
    curve = [(f, r["Val_CRPS"], r["val_spread_skill"]) for f, r in sorted(results.items())]
    return SpreadCalibration(chosen, float(hp["cond_noise_scale"]),
                             float(hp["cond_noise_hr_factor"]), results[1.0], results[chosen],
                             curve)


def calibrate_checkpoint(
    path: Path, score: Callable[[SimpleVAE3D], dict[str, float]], device: str | object = "cpu",
    out: Path | None = None,
) -> SpreadCalibration:
    """Calibrate the model in checkpoint ``path`` and write it (atomically) to ``out``
    (default: back to ``path``)."""
    ck = load_checkpoint(path)
    cal = calibrate_noise_scale(build_from_checkpoint(ck).to(device), score)
    ck["hparams"].update(cond_noise_scale=cal.scale, cond_noise_hr_factor=cal.hr_factor)
    save_checkpoint(out or path, ck)
    return cal
