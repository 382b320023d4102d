"""The prepared dataset directory: memmap-able arrays + JSON metadata.

Layout::

    X_lr.npy       (N, C, h, w) float32, physical units
    Y_hr.npy       (N, 1, H, W) float32, mm per time step (NaN never: sea pixels are 0, masked)
    statics.npy    (K, H, W) float32, names in metadata/statics.json
    metadata/      split.json categories.json thresholds.json H_W.json normalization.json
                   provenance.json statics.json channels.json samples.json

``samples.json`` (per sample, compact JSON): ``time`` (ISO strings, null where unknown; or null
when the source has no time axis), ``group`` (int location group, e.g. one per radar tile),
``group_key`` (the coordinates behind ``group``, "a,b", or null) and ``step`` (the sampling
interval, "1h"/"1D", or null). Directories prepared before it existed read as one group whose
consecutive ids are consecutive time steps.

Written to a temporary sibling directory and renamed into place, so a failed prepare never
leaves a half-written dataset behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from precipgen.data.transforms import Normalization

METADATA_FILES = (
    "split.json",
    "categories.json",
    "thresholds.json",
    "H_W.json",
    "normalization.json",
    "provenance.json",
    "statics.json",
    "channels.json",
    "samples.json",
)
OPTIONAL_METADATA = ("samples.json",)  # absent from older prepared dirs: defaults apply


class DatasetError(ValueError):
    """A prepared dataset is missing or malformed; the message names the file."""


_STEP_UNITS = {"D": "D", "h": "h", "min": "m", "s": "s"}  # step suffix -> numpy unit


def format_step(step: np.timedelta64 | None) -> str | None:
    """``1h``, ``1D``, ``15min``, ``30s``: the largest unit that divides the interval."""
    if step is None:
        return None
    sec = int(step / np.timedelta64(1, "s"))
    for suffix, n in (("D", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if sec % n == 0:
            return f"{sec // n}{suffix}"
    return None  # sub-second steps: not worth supporting


def parse_step(text: str | None) -> np.timedelta64 | None:
    if text is None:
        return None
    m = re.fullmatch(r"(\d+)\s*(D|h|min|s)", str(text).strip())
    if not m:
        raise DatasetError(f"unknown time step {text!r} (expected e.g. 1h, 1D, 15min)")
    return np.timedelta64(int(m.group(1)), _STEP_UNITS[m.group(2)]).astype("timedelta64[s]")


def infer_step(time: np.ndarray | None, group: np.ndarray) -> np.timedelta64 | None:
    """The most common positive interval between successive samples of one group (the
    smallest on ties); None without times or without any such pair."""
    if time is None:
        return None
    t = np.asarray(time, dtype="datetime64[s]")
    order = np.lexsort((t, group))
    dt = np.diff(t[order])
    ok = (np.diff(group[order]) == 0) & ~np.isnat(dt) & (dt > np.timedelta64(0, "s"))
    if not ok.any():
        return None
    vals, counts = np.unique(dt[ok], return_counts=True)
    return vals[np.argmax(counts)]  # unique sorts ascending, argmax takes the first maximum


@dataclass(frozen=True)
class Samples:
    """Per-sample time and location group (``samples.json``)."""

    time: np.ndarray | None  # (N,) datetime64[s], NaT where unknown; None: no time axis
    group: np.ndarray  # (N,) int64
    group_key: str | None
    step: np.timedelta64 | None  # sampling interval; None: consecutive ids = consecutive steps


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise DatasetError(f"prepared dataset is missing {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from e


@dataclass
class PreparedDataset:
    """Read access to a prepared dataset directory (arrays are memory-mapped)."""

    root: Path

    @classmethod
    def open(cls, root: str | Path) -> PreparedDataset:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"prepared dataset directory not found: {root}")
        for name in ("X_lr.npy", "Y_hr.npy", "statics.npy"):
            if not (root / name).exists():
                raise DatasetError(f"prepared dataset is missing {root / name}")
        for name in METADATA_FILES:
            if name not in OPTIONAL_METADATA and not (root / "metadata" / name).exists():
                raise DatasetError(f"prepared dataset is missing {root / 'metadata' / name}")
        return cls(root)

    # ---- arrays ----
    @cached_property
    def X_lr(self) -> np.ndarray:
        return np.load(self.root / "X_lr.npy", mmap_mode="r")

    @cached_property
    def Y_hr(self) -> np.ndarray:
        return np.load(self.root / "Y_hr.npy", mmap_mode="r")

    @cached_property
    def statics(self) -> np.ndarray:
        return np.load(self.root / "statics.npy")

    # ---- metadata ----
    def meta(self, name: str) -> Any:
        return _read_json(self.root / "metadata" / name)

    @cached_property
    def static_names(self) -> list[str]:
        return list(self.meta("statics.json")["names"])

    @cached_property
    def channel_names(self) -> list[str]:
        return list(self.meta("channels.json")["names"])

    @cached_property
    def channel_units(self) -> list[str | None]:
        """UDUNITS per predictor channel (None where the input did not say)."""
        units = self.meta("channels.json").get("units") or []
        return [units[i] if i < len(units) else None for i in range(len(self.channel_names))]

    @cached_property
    def sample_word(self) -> str:
        """What one sample is called in messages, reports and figures: "day" for daily data
        (and data without a known step), else "sample" (hourly radar tiles are no days)."""
        step = self.samples.step
        return "day" if step is None or step == np.timedelta64(1, "D") else "sample"

    @cached_property
    def split(self) -> dict[str, np.ndarray]:
        s = self.meta("split.json")
        return {k: np.asarray(s[k], dtype=np.int64) for k in ("train", "val", "test")}

    @cached_property
    def samples(self) -> Samples:
        path = self.root / "metadata" / "samples.json"
        n = self.n_days
        if not path.exists():  # prepared before samples.json: one group, ids in time order
            return Samples(None, np.zeros(n, dtype=np.int64), None, None)
        s = _read_json(path)
        try:
            group = np.asarray(s["group"], dtype=np.int64)
            raw_time = s.get("time")
            time = (None if raw_time is None or all(t is None for t in raw_time) else
                    np.array(["NaT" if t is None else t for t in raw_time], dtype="datetime64[s]"))
            step = parse_step(s.get("step"))
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{path} is malformed: {e!r}") from e
        for what, arr in (("group", group), ("time", time)):
            if arr is not None and arr.shape != (n,):
                raise DatasetError(f"{path}: '{what}' has {len(arr)} entries for {n} samples")
        if time is not None and step is None:
            step = infer_step(time, group)
        return Samples(time, group, s.get("group_key"), step)

    @cached_property
    def categories(self) -> dict[str, Any]:
        return self.meta("categories.json")

    @cached_property
    def heavy_days(self) -> np.ndarray:
        return np.asarray(self.categories["heavy"], dtype=np.int64)

    @cached_property
    def thresholds(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.meta("thresholds.json").items() if _is_num(v)}

    @cached_property
    def normalization(self) -> Normalization:
        return Normalization.from_json(self.meta("normalization.json"))

    @cached_property
    def provenance(self) -> dict[str, Any]:
        return self.meta("provenance.json")

    @cached_property
    def land_mask(self) -> np.ndarray:
        return self.static("land_sea_mask") > 0.5

    def static(self, name: str) -> np.ndarray:
        if name not in self.static_names:
            raise DatasetError(
                f"{self.root / 'statics.npy'} has no static '{name}' (has {self.static_names})"
            )
        return self.statics[self.static_names.index(name)]

    @property
    def n_days(self) -> int:
        return int(self.Y_hr.shape[0])

    @property
    def hr_shape(self) -> tuple[int, int]:
        return tuple(self.Y_hr.shape[-2:])  # type: ignore[return-value]

    @property
    def lr_shape(self) -> tuple[int, int]:
        return tuple(self.X_lr.shape[-2:])  # type: ignore[return-value]

    @property
    def n_channels(self) -> int:
        return int(self.X_lr.shape[1])

    @cached_property
    def digest(self) -> str:
        return self.provenance.get("digest") or dataset_digest(self.root)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def dataset_digest(root: Path, files: tuple[str, ...] = ("X_lr.npy", "Y_hr.npy", "statics.npy")) -> str:
    """Content digest of the arrays (sha256, first 16 hex chars), streamed in 8 MiB blocks."""
    h = hashlib.sha256()
    for name in files:
        with open(Path(root) / name, "rb") as f:
            for block in iter(lambda: f.read(8 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


class AtomicDir:
    """Context manager: write into a temp dir next to ``target``; rename on success.

    An existing ``target`` is refused unless ``overwrite``; on error the temp dir is removed and
    ``target`` is left untouched.
    """

    def __init__(self, target: str | Path, overwrite: bool = False):
        self.target = Path(target)
        self.overwrite = overwrite
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        if self.target.exists() and not self.overwrite:
            raise FileExistsError(
                f"output directory {self.target} already exists; pass --overwrite to replace it"
            )
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        # mkdtemp makes the dir 0700; give the result the mode a plain mkdir would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, old)
            os.replace(self.tmp, self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.target)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any, compact: bool = False) -> None:
    text = (json.dumps(obj, separators=(",", ":"), default=_json_default) if compact
            else json.dumps(obj, indent=2, default=_json_default))
    atomic_write_bytes(Path(path), text.encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_prepared(
    out_dir: Path,
    X_lr: np.ndarray,
    Y_hr: np.ndarray,
    statics: np.ndarray,
    static_names: list[str],
    channel_names: list[str],
    metadata: dict[str, Any],
    channel_units: list[str | None] | None = None,
) -> None:
    """Write arrays + metadata into ``out_dir`` (an existing, empty, temporary directory).

    ``metadata`` maps file names in :data:`METADATA_FILES` (minus statics/channels) to objects.
    The caller wraps this in :class:`AtomicDir`.
    """
    out_dir = Path(out_dir)
    np.save(out_dir / "X_lr.npy", np.ascontiguousarray(X_lr, dtype=np.float32))
    np.save(out_dir / "Y_hr.npy", np.ascontiguousarray(Y_hr, dtype=np.float32))
    np.save(out_dir / "statics.npy", np.ascontiguousarray(statics, dtype=np.float32))
    md = out_dir / "metadata"
    md.mkdir(exist_ok=True)
    write_json(md / "statics.json", {"names": list(static_names)})
    write_json(md / "channels.json", {"names": list(channel_names),
                                      "units": list(channel_units or [None] * len(channel_names))})
    for name, obj in metadata.items():
        write_json(md / name, obj, compact=name == "samples.json")  # one entry per sample
