"""``precipgen prepare``: bring data in (synthetic, SRDRN arrays or NetCDF) and write a prepared
dataset directory, tracked as one MLflow run.

Inputs are loaded and checked, and all metadata computed, before anything is written; the
directory is then written to a temporary sibling and renamed into place only after the MLflow
run has logged it, so a failure at any point leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from precipgen import __version__
from precipgen.config import Config
from precipgen.data import metadata, sources
from precipgen.data.store import AtomicDir, dataset_digest, write_json, write_prepared
from precipgen.data.transforms import is_precip_like
from precipgen.data.validate import check_arrays
from precipgen.locks import OutputClaim, claim_output
from precipgen.plots.prepare import dataset_overview
from precipgen.steps.flags import config_from_args, empty_to_none, opt


def _bool(v: str) -> bool:
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "y"):
        return True
    if s in ("false", "0", "no", "n", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


def _int(v: str) -> int:
    """A required integer (generator sizes have no "not given")."""
    value = opt(int)(v)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected an integer, got {v!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=("synthetic", "srdrn", "netcdf"), default="synthetic")
    p.add_argument("--output", default=None, help="prepared dataset dir (default: data.path)")
    # `--overwrite` alone, or `--overwrite true|false` (MLproject passes a value).
    p.add_argument("--overwrite", nargs="?", const=True, default=False, type=_bool)
    p.add_argument("--units", default=None,
                   help="precipitation units per time step (default: the NetCDF attribute, "
                   "else mm/day)")
    p.add_argument("--allow_implausible", nargs="?", const=True, default=False, type=_bool,
                   help="accept precipitation above the unit's plausible maximum "
                        "(2000 mm/day, 500 mm/h)")
    p.add_argument("--pixel_km", type=float, default=None,
                   help="grid spacing for dist_to_coast_km (default: from lat/lon, else 4 km)")
    g = p.add_argument_group("synthetic source")
    g.add_argument("--days", type=_int, default=3000)
    g.add_argument("--height", type=_int, default=156)
    g.add_argument("--width", type=_int, default=132)
    g.add_argument("--factor", type=_int, default=12)
    g.add_argument("--seed", type=_int, default=0)
    g = p.add_argument_group("srdrn source (.npy arrays)")
    g.add_argument("--predictors", default=None, help="(N, h, w, C) channels last")
    g.add_argument("--obs", default=None, help="(N, H, W), NaN where no data (sea)")
    g.add_argument("--predictors_test", default=None)
    g.add_argument("--obs_test", default=None)
    g.add_argument("--land_mask", default=None, help="(H, W), 1 = land")
    g.add_argument("--mean", default=None, help="SRDRN normalisation means (inputs normalised)")
    g.add_argument("--std", default=None, help="SRDRN normalisation stds")
    g.add_argument("--channel_names", default=None, help="comma-separated predictor names")
    g = p.add_argument_group("netcdf source")
    g.add_argument("--input", nargs="+", default=[], metavar="FILE")
    g.add_argument("--target", default=None, help="precipitation variable")
    g.add_argument("--predictor_vars", nargs="+", default=[], metavar="VAR")
    g.add_argument("--channel_dim", default=None)
    g.add_argument("--time_dim", default="time")
    g.add_argument("--group_coords", default=None,
                   help="comma-separated per-sample coordinates naming a location (samples "
                   "sharing them form one group; time windows stay in a group); default: "
                   "tile_row0,tile_col0 when the file has both; 'none' for one group")


def _list(values: list[str]) -> list[str]:
    """Repeated values or one space-separated string (MLproject passes one string)."""
    return [v for item in values for v in str(item).split() if v]


def _source_options(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that matter for this source, with MLproject's empty strings dropped."""
    if args.source == "synthetic":
        return {k: getattr(args, k) for k in ("days", "height", "width", "factor", "seed")}
    if args.source == "srdrn":
        keys = ("predictors", "obs", "predictors_test", "obs_test", "land_mask", "mean", "std",
                "channel_names")
        return {k: empty_to_none(getattr(args, k)) for k in keys}
    return {
        "input": _list(args.input),
        "target": empty_to_none(args.target),
        "predictor_vars": _list(args.predictor_vars),
        "channel_dim": empty_to_none(args.channel_dim),
        "time_dim": empty_to_none(args.time_dim) or "time",
        # "none" turns grouping off, so it must survive empty_to_none (which maps it to None)
        "group_coords": ("none" if str(args.group_coords or "").strip().lower() == "none"
                         else empty_to_none(args.group_coords)),
    }


def _example_days(means: list[float]) -> list[int]:
    """Days at the median, 90th percentile and maximum of land-mean precipitation."""
    order = np.argsort(np.asarray(means), kind="stable")
    return [int(order[int(q * (len(order) - 1))]) for q in (0.5, 0.9, 1.0)]


def _figure(raw: sources.RawData, land: np.ndarray, md: metadata.Metadata) -> Any:
    days = _example_days(md.files["categories.json"]["land_mean_mm"])
    ch = next((i for i, c in enumerate(raw.channel_names) if is_precip_like(c)), 0)
    thr = md.files["thresholds.json"]
    means = md.files["categories.json"]["land_mean_mm"]
    return dataset_overview(
        raw.X[days, ch], raw.Y[days, 0], land,
        [f"day {d} (land mean {means[d]:.2f} {raw.units})" for d in days],
        raw.channel_names[ch], raw.units, md.wet_values, thr["wet_threshold_mm"],
        {"P95": thr["P95"], "P99": thr["P99"]},
    )


def _provenance(raw: sources.RawData, opts: dict[str, Any], md: metadata.Metadata,
                digest: str) -> dict[str, Any]:
    extra = {k: v for k, v in raw.provenance.items() if k not in ("inputs", "lat_lon")}
    return {
        "source": raw.source,
        "inputs": raw.provenance.get("inputs", []),
        "units": raw.units,
        "precipgen_version": __version__,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "options": opts,
        "statics": md.static_notes,
        **extra,
        "digest": digest,
    }


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = Path(args.output or cfg.data.path)
    if out.exists() and not args.overwrite:  # fail before any slow work
        raise FileExistsError(f"output directory {out} already exists; pass --overwrite to replace it")
    # mlflow is imported only once the inputs are known to be good (bad input fails fast);
    # a remote server is checked up front, so a dead one fails before a long generation.
    if os.environ.get("MLFLOW_TRACKING_URI", "").startswith(("http://", "https://")):
        from precipgen import tracking

        try:
            tracking.check_reachable(tracking.tracking_uri())
        except tracking.TrackingError as e:
            print(f"precipgen prepare: error: {e}", file=sys.stderr)
            return 2
    with claim_output(out, "--output") as owner:
        return _run(args, cfg, out, owner)


def _run(args: argparse.Namespace, cfg: Config, out: Path, owner: OutputClaim) -> int:
    opts = _source_options(args)
    raw = sources.load(args.source, opts, empty_to_none(args.units))
    land = raw.land_mask if raw.land_mask is not None else metadata.derive_land_mask(raw.Y)
    factor = check_arrays(raw.X, raw.Y, land, raw.x_desc, raw.y_desc, raw.units,
                          args.allow_implausible)
    raw.Y[:, 0][:, ~land] = 0.0  # no data (sea) is stored as 0; the land mask marks it
    md = metadata.build(raw, land, factor, cfg.data, args.pixel_km)

    from precipgen import tracking  # imports mlflow: only once the inputs are known good

    params = {"source": args.source, "output": str(out), "units": raw.units,
              **{k: " ".join(v) if isinstance(v, list) else v for k, v in opts.items()
                 if v is not None},
              **cfg.to_dict()}
    with tracking.start_run("prepare", params=params, config_yaml=cfg.to_yaml()) as run, \
            AtomicDir(out, overwrite=args.overwrite) as tmp:
        owner.set_run_id(run.run_id)
        write_prepared(tmp, raw.X, raw.Y, md.statics, md.static_names, raw.channel_names,
                       md.files, raw.channel_units)
        digest = dataset_digest(tmp)
        write_json(tmp / "metadata" / "provenance.json", _provenance(raw, opts, md, digest))
        s = md.summary
        run.set_tags({"precipgen.data_digest": digest, "precipgen.source": raw.source})
        run.log_dataset(out, digest, name=f"prepared-{raw.source}", context="prepared",
                        profile={"n_days": s["days_total"], "X_lr": list(raw.X.shape),
                                 "Y_hr": list(raw.Y.shape), "units": raw.units})
        run.log_artifacts(tmp / "metadata", "metadata")
        run.log_metrics(s)
        run.log_figure(_figure(raw, land, md), "figures/prepare_overview.png")
        tracking.mark_output(tmp, run.run_id)
        url = run.url
    # Daily data has days; hourly radar tiles (MRMS) are samples.
    what = "days" if md.files["samples.json"].get("step") in ("1D", None) else "samples"
    print(
        f"prepare: {s['days_total']} {what} (train {s['days_train']} / val {s['days_val']} / "
        f"test {s['days_test']}), {s['heavy_days']} heavy, P95={s['P95']:.2f} {raw.units}, "
        f"P99={s['P99']:.2f} {raw.units} -> {out} | run {url}"
    )
    return 0
