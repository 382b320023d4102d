"""The one opener from a path or model URI to a loaded model in physical units.

``open_model(uri, kinds)`` resolves a local path, ``runs:/<id>/<path>`` or
``models:/<name>@<alias>``, finds the checkpoint, loads it safely, checks its kind, and builds
the generator with the model's own normalisation (what it was trained with). Every step that
consumes a model (sample, finetune_crps, evaluate, tune, the pyfunc) goes through here.

A generator's ``predict(x_lr_physical (N, C, h, w), **params)`` returns an ensemble in
physical units, ``(num_samples, N, 1, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from precipgen import tracking
from precipgen.data.transforms import Normalization
from precipgen.models import cvae, srdrn, vae3d
from precipgen.models.checkpoint import find_checkpoint, load_checkpoint
from precipgen.models.memory_format import fast_layout

LOADERS: dict[str, Callable[[dict[str, Any], Normalization], Any]] = {
    "cvae": cvae.load_cvae,
    "vae3d": vae3d.load_vae3d,
    "srdrn": srdrn.load_srdrn,
}


class MissingModelError(FileNotFoundError):
    """No model behind a default registry URI; the message names the step that makes it."""


def generator_from(ckpt: dict[str, Any], source: Path | str,
                   normalization: Path | None = None) -> Any:
    """The generator of a loaded checkpoint. Its own stored transform wins; the file beside
    it is only a fallback for checkpoints that carry none."""
    kind = ckpt.get("kind")
    if kind not in LOADERS:
        raise ValueError(f"checkpoint {source} has unknown kind {kind!r} "
                         f"(known: {', '.join(LOADERS)})")
    stored = ckpt.get("normalization")
    if stored:
        norm = Normalization.from_json(dict(stored))
    elif normalization is not None:
        norm = Normalization.load(normalization)
    else:
        raise ValueError(f"checkpoint {source} carries no normalisation and none was given")
    gen = LOADERS[kind](ckpt, norm)
    if isinstance(getattr(gen, "model", None), nn.Module):
        fast_layout(gen.model)  # in place: inference runs channels-last
    return gen


def open_generator(checkpoint: str | Path, normalization: str | Path | None = None) -> Any:
    """A local checkpoint file -> its generator (what the registered pyfunc loads)."""
    path = Path(checkpoint)
    return generator_from(load_checkpoint(path), path,
                          Path(normalization) if normalization else None)


@dataclass
class OpenedModel:
    uri: str
    kind: str  # cvae | vae3d | srdrn
    checkpoint: Path
    state: dict[str, Any]  # the loaded checkpoint
    run_id: str | None  # the run that produced it, when known
    generator: Any

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self.state.get("hparams") or self.state.get("model_hparams") or {})

    def ensemble(self, x: np.ndarray, num_samples: int, seed: int,
                 deterministic: bool = False) -> np.ndarray:
        """``(num_samples, N, 1, H, W)`` in physical units. vae3d: deterministic (z = mu, no
        noise) or generative; cvae: from X alone (prior); srdrn: deterministic by nature."""
        g = self.generator
        if self.kind == "vae3d":
            mode = "deterministic" if deterministic else "generative"
            return g.predict(x, num_samples=num_samples, mode=mode, seed=seed)
        if self.kind == "cvae":
            return g.predict(x, num_samples=num_samples, mode="prior", seed=seed)
        return g.predict(x, num_samples=num_samples)

    def use_dataset(self, ds: Any) -> None:
        """Score on ``ds`` (maybe another region): its land mask and statics replace the
        training data's; the normalisation stays the model's own."""
        import torch

        from precipgen.data.datasets import statics_tensor

        g = self.generator
        if getattr(g, "land", None) is not None:
            g.land = torch.from_numpy(np.ascontiguousarray(ds.land_mask))
        if getattr(g, "statics", None) is not None and tuple(g.statics.shape) == (
                len(ds.static_names), *ds.hr_shape):
            g.statics = statics_tensor(ds).float()

    def check_fits(self, ds: Any, flag: str) -> None:
        """The model's channels and grids must be the dataset's; the error names both."""
        hp = self.hparams
        want = (int(hp.get("in_channels", -1)), list(hp.get("lr_shape", [])),
                list(hp.get("hr_shape", [])))
        got = (ds.n_channels, list(ds.lr_shape), list(ds.hr_shape))
        if want != got:
            raise ValueError(
                f"{flag} {self.uri} ({self.checkpoint}) expects (channels, low-res grid, "
                f"high-res grid) = {want} but dataset {ds.root} has {got}")
        norm = self.generator.norm if hasattr(self.generator, "norm") else None
        if norm is not None:
            if list(norm.channel_names) != list(ds.channel_names):
                raise ValueError(f"{flag} {self.uri} was trained on channels "
                                 f"{list(norm.channel_names)} but dataset {ds.root} has "
                                 f"{list(ds.channel_names)}")
            if norm.units != ds.normalization.units:
                raise ValueError(f"{flag} {self.uri} predicts precipitation in {norm.units} but "
                                 f"dataset {ds.root} is in {ds.normalization.units}")


def _run_id_near(path: Path, ck: dict[str, Any]) -> str | None:
    """The producing run: a ``.precipgen_run`` marker up to three levels up, else the
    checkpoint's own ``run_id`` field."""
    for parent in list(path.parents)[:3]:
        rid = tracking.producing_run_id(parent)
        if rid:
            return rid
    return str(ck.get("run_id") or "") or None


def open_model(uri: str | None, kinds: tuple[str, ...], *, default: str | None = None,
               producer: str | None = None, flag: str = "--model") -> OpenedModel:
    """Open ``uri`` (or ``default`` when empty) as one of ``kinds``.

    A missing default registry model raises :class:`MissingModelError` naming ``producer``,
    the step that registers it."""
    used = uri or default
    if not used:
        raise ValueError(f"{flag}: no model given")
    if not uri and default and default.startswith("models:/"):
        tracking.setup()
        try:
            tracking.model_version(default)
        except FileNotFoundError as e:
            make = f"run `precipgen {producer}` first, or " if producer else ""
            raise MissingModelError(
                f"no {flag} given and no registered model {default} in "
                f"{tracking.tracking_uri()}: {make}pass {flag} PATH | runs:/<id>/<path> | "
                "models:/<name>@<alias>") from e
    res = tracking.resolve(used)
    path = find_checkpoint(res.path)
    ck = load_checkpoint(path)
    kind = str(ck.get("kind"))
    if kind not in kinds:
        raise ValueError(f"{flag} {used}: checkpoint {path} is kind {kind!r}, expected "
                         f"{' or '.join(repr(k) for k in kinds)}")
    return OpenedModel(used, kind, path, ck, res.run_id or _run_id_near(path, ck),
                       generator_from(ck, path, res.path / "artifacts" / "normalization.json"
                                      if (res.path / "artifacts").is_dir() else None))
