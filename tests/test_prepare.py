"""`precipgen prepare` end to end for each source, checked on disk and in MLflow."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import BIN, REPO, run_cli
from mlflow.tracking import MlflowClient

from precipgen.data.store import METADATA_FILES, PreparedDataset, dataset_digest

HAS_SYNTHETIC = importlib.util.find_spec("precipgen.data.synthetic") is not None
needs_synthetic = pytest.mark.skipif(not HAS_SYNTHETIC, reason="synthetic generator not written yet")
SMALL = ["--days", "120", "--height", "48", "--width", "48", "--factor", "4"]
SUMMARY = re.compile(
    r"^prepare: (\d+) (?:days|samples) \(train (\d+) / val (\d+) / test (\d+)\), (\d+) heavy, "
    r"P95=([\d.]+) (\S+), P99=([\d.]+) \S+ -> (.+) \| (.+)$"
)


def summary_line(stdout: str) -> re.Match:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one summary line, got {lines}"
    m = SUMMARY.match(lines[0])
    assert m, lines[0]
    return m


def check_dataset(out: Path) -> PreparedDataset:
    """What every prepared directory must satisfy, whatever the source."""
    ds = PreparedDataset.open(out)
    X, Y = np.load(out / "X_lr.npy", mmap_mode="r"), np.load(out / "Y_hr.npy", mmap_mode="r")
    assert X.dtype == Y.dtype == np.float32 and X.ndim == 4 and Y.ndim == 4 and Y.shape[1] == 1
    assert np.isfinite(Y).all() and (Y >= 0).all()
    land = ds.land_mask
    assert (np.asarray(Y)[:, 0][:, ~land] == 0).all()  # no data (sea) stored as 0
    hw = ds.meta("H_W.json")
    assert (hw["N"], hw["C"], hw["h"], hw["w"]) == X.shape
    assert (hw["H"], hw["W"]) == Y.shape[2:] and hw["H"] == hw["h"] * hw["factor"]
    s = ds.split
    allidx = np.concatenate([s["train"], s["val"], s["test"]])
    np.testing.assert_array_equal(allidx, np.arange(len(Y)))  # contiguous blocks in order
    cats = ds.categories
    assert sorted(cats["dry"] + cats["moderate"] + cats["heavy"]) == list(range(len(Y)))
    train_means = np.asarray(cats["land_mean_mm"])[s["train"]]
    assert cats["heavy_threshold_mm"] == pytest.approx(
        np.percentile(train_means, cats["heavy_percentile"]), rel=1e-6)
    thr = ds.thresholds
    assert 0 < thr["P95"] < thr["P99"] <= float(np.max(Y))
    prov = ds.provenance
    assert prov["digest"] == dataset_digest(out) and prov["precipgen_version"]
    assert {"names"} == set(ds.meta("statics.json")) and ds.statics.shape[0] == len(ds.static_names)
    assert {"land_sea_mask", "dist_to_coast_km", "lat", "lon"} <= set(ds.static_names)
    norm = ds.normalization
    assert norm.channel_names == ds.channel_names and norm.units == prov["units"]
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))
    return ds


def check_run(uri: str, out: Path, ds: PreparedDataset, url: str) -> None:
    run_id = (out / ".precipgen_run").read_text().strip()
    assert run_id in url
    client = MlflowClient(uri)
    r = client.get_run(run_id)
    assert r.info.status == "FINISHED"
    p, m, t = r.data.params, r.data.metrics, r.data.tags
    assert p["source"] == ds.provenance["source"] and p["data.val_fraction"] == "0.15"
    assert t["precipgen.entry_point"] == "prepare" and t["precipgen.data_digest"] == ds.digest
    s = ds.split
    assert m["days_train"] == len(s["train"]) and m["days_test"] == len(s["test"])
    assert m["heavy_days"] == len(ds.heavy_days)
    assert m["P95"] == pytest.approx(ds.thresholds["P95"])
    assert m["max_precip"] == pytest.approx(float(np.max(ds.Y_hr)))
    assert 0 < m["wet_fraction"] < 1
    arts = {f.path for f in client.list_artifacts(run_id, "metadata")}
    assert {f"metadata/{n}" for n in METADATA_FILES} <= arts
    top = {f.path for f in client.list_artifacts(run_id)}
    assert "config.yaml" in top
    assert [f.path for f in client.list_artifacts(run_id, "figures")] == [
        "figures/prepare_overview.png"]
    (inp,) = r.inputs.dataset_inputs
    assert inp.dataset.digest == ds.digest
    assert json.loads(inp.dataset.source)["uri"] == str(out.resolve())


@needs_synthetic
def test_synthetic_against_server(tracking_server, tmp_path):
    out = tmp_path / "prepared"
    proc = run_cli("prepare", *SMALL, "--seed", "1", "--output", str(out), cwd=tmp_path)
    m = summary_line(proc.stdout)
    assert m.group(1) == "120" and m.group(7) == "mm/day" and m.group(9) == str(out)
    assert m.group(10).startswith(f"run {tracking_server}/#/experiments/")
    ds = check_dataset(out)
    assert ds.X_lr.shape == (120, len(ds.channel_names), 12, 12) and ds.Y_hr.shape == (120, 1, 48, 48)
    assert "elevation" in ds.static_names
    assert ds.meta("samples.json") == {"time": None, "group": [0] * 120, "group_key": None,
                                       "step": "1D"}  # daily: one group, ids are days
    gen = ds.provenance["generator"]
    assert gen["seed"] == 1 and gen["params"]["days"] == 120 and gen["params"]["factor"] == 4
    assert ds.provenance["inputs"] == []
    check_run(tracking_server, out, ds, m.group(10))
    p = MlflowClient(tracking_server).get_run(ds.root.joinpath(".precipgen_run").read_text().strip()).data.params
    assert (p["days"], p["height"], p["factor"], p["seed"]) == ("120", "48", "4", "1")


@needs_synthetic
def test_synthetic_overwrite_is_reproducible(sqlite_tracking, tmp_path):
    out = tmp_path / "prepared"
    args = ["prepare", "--days", "40", "--height", "24", "--width", "24", "--factor", "4",
            "--output", str(out)]
    run_cli(*args, cwd=tmp_path)
    first = json.loads((out / "metadata" / "provenance.json").read_text())["digest"]
    (out / "stale.txt").write_text("old")
    proc = run_cli(*args, "--overwrite", cwd=tmp_path)
    assert not (out / "stale.txt").exists()  # replaced as a whole
    ds = check_dataset(out)
    assert ds.digest == first  # same seed, same bytes
    check_run(sqlite_tracking, out, ds, summary_line(proc.stdout).group(10))


def test_srdrn_from_mrms_arrays(sqlite_tracking, tmp_path, mrms_path):
    with xr.open_dataset(mrms_path) as f:
        sub = f.isel(time=slice(0, 200))
        obs, pred = sub["precip"].values, sub["predictors"].values
    paths = {}
    for name, arr in {"predictors": pred[:160], "obs": obs[:160],
                      "predictors_test": pred[160:], "obs_test": obs[160:]}.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    out = tmp_path / "prepared"
    proc = run_cli("prepare", "--source", "srdrn", *[a for k, v in paths.items() for a in (f"--{k}", str(v))],
                   "--channel_names", "mean_t,mean_tminus1,wetfrac_t", "--units", "mm/h",
                   "--output", str(out), cwd=tmp_path)
    m = summary_line(proc.stdout)
    assert m.group(7) == "mm/h" and " samples (train" in proc.stdout  # hourly tiles, not days
    ds = check_dataset(out)
    np.testing.assert_array_equal(ds.X_lr, pred.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(ds.Y_hr[:, 0], obs)  # all land: stored as is
    assert ds.split["test"].tolist() == list(range(160, 200))
    assert ds.meta("split.json")["test_from"] == "test files"
    assert ds.samples.time is None and (ds.samples.group == 0).all()
    assert ds.meta("samples.json")["step"] == "1h"  # from --units
    assert ds.land_mask.all()
    assert ds.channel_names == ["mean_t", "mean_tminus1", "wetfrac_t"]
    assert ds.normalization.channel_log1p == [True, True, False]
    roles = {i["role"]: i["sha256"] for i in ds.provenance["inputs"]}
    assert set(roles) == set(paths) and ds.provenance["units"] == "mm/h"
    check_run(sqlite_tracking, out, ds, m.group(10))


@pytest.mark.parametrize("store", ["tracking_server", "sqlite_tracking"])
def test_netcdf_mrms(store, request, tmp_path, mrms_path):
    uri = request.getfixturevalue(store)
    out = tmp_path / "prepared"
    proc = run_cli("prepare", "--source", "netcdf", "--input", str(mrms_path), "--target", "precip",
                   "--predictor_vars", "predictors", "--channel_dim", "channel",
                   "--output", str(out), cwd=tmp_path)
    m = summary_line(proc.stdout)
    ds = check_dataset(out)
    assert ds.X_lr.shape == (1141, 3, 13, 11) and ds.Y_hr.shape == (1141, 1, 156, 132)
    assert ds.provenance["units"] == "mm/h" and m.group(7) == "mm/h"
    # the README's whole-extract statistics (2000 tiles): wet P95 6.8, P99 18.8 mm/h
    assert 5.0 < ds.thresholds["P95"] < 9.0 and 14.0 < ds.thresholds["P99"] < 24.0
    assert 0.2 < ds.thresholds["wet_fraction"] < 0.35
    times = ds.meta("split.json")["time_range"]
    assert times["train"][1] < times["val"][0] <= times["val"][1] < times["test"][0]
    assert ds.provenance["inputs"][0]["path"] == str(mrms_path.resolve())
    samples = ds.meta("samples.json")  # several tiles per hour: grouped by tile origin
    assert samples["group_key"] == "tile_row0,tile_col0" and samples["step"] == "1h"
    assert len(samples["time"]) == 1141 and samples["time"][0] == "2016-09-20T01:00:00"
    assert len(set(samples["group"])) > len(set(samples["time"]))
    check_run(uri, out, ds, m.group(10))


def test_netcdf_group_coords_flag(sqlite_tracking, tmp_path):
    """--group_coords names the location coordinates; 'none' turns grouping off."""
    from precipgen import cli
    from precipgen.data.sources import group_coords
    from precipgen.steps import prepare

    n = 24
    rng = np.random.default_rng(0)
    xr.Dataset(
        {"rain": (("time", "y", "x"), rng.gamma(0.5, 2.0, (n, 8, 8)).astype(np.float32)),
         "pred": (("time", "a", "b"), rng.random((n, 2, 2)).astype(np.float32)),
         "site": (("time",), np.tile([3, 9], n // 2))},
        coords={"time": np.repeat(np.datetime64("2000-01-01", "ns")
                                  + np.arange(n // 2) * np.timedelta64(1, "D"), 2)},
    ).to_netcdf(tmp_path / "s.nc")
    out = tmp_path / "prepared"
    run_cli("prepare", "--source", "netcdf", "--input", str(tmp_path / "s.nc"), "--target", "rain",
            "--predictor_vars", "pred", "--group_coords", "site", "--output", str(out),
            cwd=tmp_path)
    s = check_dataset(out).meta("samples.json")
    assert s["group"] == [0, 1] * (n // 2) and s["group_key"] == "site" and s["step"] == "1D"
    parser = cli.build_parser("prepare")
    for flag, want in (("none", []), ("", None), ("a, b", ["a", "b"])):
        args = parser.parse_args(["prepare", "--source", "netcdf", "--group_coords", flag])
        assert group_coords(prepare._source_options(args)["group_coords"]) == want


@needs_synthetic
@pytest.mark.slow
def test_mlflow_run_entry_point(tracking_server, tmp_path):
    out = tmp_path / "prepared"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_server,
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [str(BIN / "mlflow"), "run", str(REPO), "-e", "prepare", "--env-manager", "local",
         "--experiment-name", "precipgen-mlproject",
         "-P", "days=40", "-P", "height=24", "-P", "width=24", "-P", "factor=4", "-P", "seed=2",
         "-P", f"output={out}", "-P", "overrides=data.heavy_percentile=90"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = re.search(r"Run \(ID '([0-9a-f]+)'\) succeeded", proc.stderr).group(1)
    assert (out / ".precipgen_run").read_text().strip() == run_id  # one run: MLFLOW_RUN_ID honoured
    ds = check_dataset(out)
    assert ds.categories["heavy_percentile"] == 90.0
    r = MlflowClient(tracking_server).get_run(run_id)
    assert r.data.params["days"] == "40" and r.data.params["data.heavy_percentile"] == "90.0"
    assert r.data.metrics["days_total"] == 40
    assert r.data.tags["precipgen.entry_point"] == "prepare"
    assert r.info.status == "FINISHED"


def test_prepared_dir_gets_normal_permissions(tmp_path):
    """AtomicDir renames a mkdtemp dir (0700); the result must be readable like a mkdir'd one."""
    from precipgen.data.store import AtomicDir

    umask = os.umask(0o022)
    try:
        with AtomicDir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_conda_env_pins_match_constraints():
    """conda.yaml is a valid env whose pip pins are exactly constraints.txt's (runtime part)."""
    import yaml

    env = yaml.safe_load((REPO / "conda.yaml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "-e ." in pip
    pins = dict(p.split("==") for p in pip if "==" in p)
    constraints = dict(
        ln.split("==") for ln in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in ln and not ln.startswith("#")
    )
    assert pins["torch"] == "2.13.0"
    for name, version in pins.items():
        assert constraints.get(name) == version, f"{name}=={version} not in constraints.txt"
    dev_and_extras = {"pytest", "pytest-timeout", "pysteps", "ruff", "optuna-dashboard", "bottle"}
    lines = (REPO / "constraints.txt").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("# CF checks"))
    dev_and_extras |= {ln.split("==")[0] for ln in lines[start + 1:] if "==" in ln}  # tests only
    assert set(pins) >= set(constraints) - dev_and_extras
