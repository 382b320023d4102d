"""Models under evaluation: resolve a URI (path | runs:/ | models:/), load the generator,
check it fits the dataset, and predict in physical units."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from precipgen import tracking
from precipgen.data.store import PreparedDataset
from precipgen.models import find_checkpoint, load_checkpoint, load_generator

DEFAULTS = {
    "deterministic": "models:/vae3d-deterministic@latest",
    "generative": "models:/vae3d-crps@latest",
    "cvae": "models:/cvae@latest",
}
# the step that registers each default, for the error message
PRODUCERS = {"deterministic": "pretrain_vae", "generative": "finetune_crps", "cvae": "train_cvae"}


class MissingModelError(FileNotFoundError):
    """No model behind a default registry URI."""


@dataclass
class LoadedModel:
    role: str  # deterministic | generative | cvae
    uri: str
    kind: str  # checkpoint kind: vae3d | cvae | srdrn
    checkpoint: Path
    run_id: str | None
    generator: Any  # .predict(x_phys (N, C, h, w), num_samples, ...) -> (m, N, 1, H, W) mm

    def predict(self, x: np.ndarray, num_samples: int, seed: int,
                deterministic: bool = False) -> np.ndarray:
        """``(num_samples, N, 1, H, W)`` mm. vae3d: deterministic (z = mu, no noise) or
        generative mode; cvae: from X alone (prior); srdrn: deterministic by construction."""
        if self.kind == "vae3d":
            mode = "deterministic" if deterministic else "generative"
            return self.generator.predict(x, num_samples=num_samples, mode=mode, seed=seed)
        if self.kind == "cvae":
            return self.generator.predict(x, num_samples=num_samples, mode="prior", seed=seed)
        return self.generator.predict(x, num_samples=num_samples)




def _run_id_near(path: Path, ck: dict[str, Any]) -> str | None:
    """The producing run: a ``.precipgen_run`` marker up to three levels up, else the
    checkpoint's own ``run_id`` field (cVAE checkpoints carry one)."""
    for parent in list(path.parents)[:3]:
        rid = tracking.producing_run_id(parent)
        if rid:
            return rid
    return str(ck.get("run_id") or "") or None


def _hparams(ck: dict[str, Any]) -> dict[str, Any]:
    return dict(ck.get("hparams") or ck.get("model_hparams") or {})


def check_fits(m: LoadedModel, ck: dict[str, Any], ds: PreparedDataset) -> None:
    hp = _hparams(ck)
    want = (int(hp.get("in_channels", -1)), list(hp.get("lr_shape", [])),
            list(hp.get("hr_shape", [])))
    got = (ds.n_channels, list(ds.lr_shape), list(ds.hr_shape))
    if want != got:
        raise ValueError(
            f"--{m.role} {m.uri} ({m.checkpoint}) expects (channels, low-res grid, high-res grid)"
            f" = {want} but dataset {ds.root} has {got}"
        )


def load_model(role: str, uri: str | None, ds: PreparedDataset,
               allowed_kinds: tuple[str, ...]) -> LoadedModel:
    """Resolve and load one model. An empty ``uri`` means the registry default of ``role``;
    a missing default raises :class:`MissingModelError` naming the step that makes it."""
    used = uri or DEFAULTS[role]
    if not uri:
        tracking.setup()
        try:
            tracking.model_version(used)
        except FileNotFoundError as e:
            raise MissingModelError(
                f"no --{role} given and no registered model {used} in {tracking.tracking_uri()}:"
                f" run `precipgen {PRODUCERS[role]}` first, or pass --{role} PATH | "
                "runs:/<id>/<path> | models:/<name>@<alias>"
            ) from e
    res = tracking.resolve(used)
    ckpt_path = find_checkpoint(res.path)
    ck = load_checkpoint(ckpt_path)
    kind = str(ck.get("kind"))
    if kind not in allowed_kinds:
        raise ValueError(f"--{role} {used}: checkpoint {ckpt_path} is kind {kind!r}, expected "
                         f"one of {list(allowed_kinds)}")
    # the model's own normalisation (what it was trained with), else the dataset's
    norm_path = ds.root / "metadata" / "normalization.json"
    if isinstance(ck.get("normalization"), dict):
        norm_path = Path(tempfile.mkdtemp(prefix="precipgen-eval-")) / "normalization.json"
        norm_path.write_text(json.dumps(ck["normalization"]))
    m = LoadedModel(role, used, kind, ckpt_path, res.run_id or _run_id_near(ckpt_path, ck),
                    load_generator(ckpt_path, norm_path))
    check_fits(m, ck, ds)
    return m
