"""``precipgen sample``: synthetic sets, the quality gate, reproducibility, the augmented SRDRN
set and lineage. One tiny cVAE is trained once for the module (``precipgen train_cvae``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from helpers import make_prepared

from precipgen import cli
from precipgen.data.store import PreparedDataset
from precipgen.synth.build import SampleSettings, build_synthetic_set
from precipgen.synth.generate import check_compatible, open_cvae
from precipgen.synth.noise import pair_normal
from precipgen.synth.quality import passes_gate, sample_stats, summarize
from precipgen.synth.select import DaySelectionError, select_days
from precipgen.synth.srdrn_export import (
    OBS_FILE,
    PREDICTORS_FILE,
    srdrn_normalisation,
    write_augmented,
)
from precipgen.synth.writer import sample_stem

TINY = ["--set", "model.d_z=4", "--set", "model.base_filters=4", "--set", "model.d_x=8",
        "--set", "model.d_y=8", "--set", "train.max_batches_per_epoch=2",
        "--set", "train.val_samples=2", "--set", "train.figure_interval=0"]
K = 2


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(mlflow_server: str, prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 1-epoch tiny cVAE: its checkpoint and the run that trained it."""
    out = tmp_path_factory.mktemp("cvae")
    run_cli("train_cvae", "--data", str(prepared), "--epochs", "1", "--batch_size", "4",
            "--output_dir", str(out), *TINY, env={"MLFLOW_TRACKING_URI": mlflow_server})
    ckpt = out / "checkpoints" / "cvae_best.pt"
    run_id = torch.load(ckpt, weights_only=True)["run_id"]
    return {"checkpoint": ckpt, "run_id": run_id}


@pytest.fixture(scope="module")
def sampled(mlflow_server: str, prepared: Path, trained: dict,
            tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One CLI run, as a user would: the model by runs:/ URI, with an augmented set."""
    root = tmp_path_factory.mktemp("sample")
    out, aug = root / "synth", root / "aug"
    proc = run_cli("sample", "--model", f"runs:/{trained['run_id']}/checkpoints/cvae_best.pt",
                   "--data", str(prepared), "--mode", "posterior", "--K", str(K),
                   "--days", "heavy_only", "--min_threshold", "0.1", "--temperature", "1.0",
                   "--output", str(out), "--seed", "3", "--batch_size", "3",
                   "--augment_out", str(aug), env={"MLFLOW_TRACKING_URI": mlflow_server})
    last = proc.stdout.strip().splitlines()[-1]
    return {"out": out, "aug": aug, "line": last, "run_id": last.rsplit("/runs/", 1)[-1]}


# ------------------------------------------------------------------------- the quality gate
def test_gate_rejects_a_low_mass_sample():
    land = np.ones((8, 8), dtype=bool)
    land[:, 0] = False
    real = np.full((8, 8), 2.0, dtype=np.float32)
    low = 0.05 * real  # 5% of the real land total: below min_threshold 0.1
    ok = 0.5 * real
    s_low = sample_stats(7, 0, low, real, land, min_threshold=0.1, wet_threshold_mm=0.1)
    s_ok = sample_stats(7, 1, ok, real, land, min_threshold=0.1, wet_threshold_mm=0.1)
    assert not s_low.accepted and s_low.mass_ratio == pytest.approx(0.05)
    assert s_ok.accepted and s_ok.mass_ratio == pytest.approx(0.5)
    # sea pixels do not count towards the land total
    sea_heavy = low.copy()
    sea_heavy[:, 0] = 1e6
    assert not sample_stats(7, 0, sea_heavy, real, land, 0.1, 0.1).accepted
    nan = ok.copy()
    nan[3, 3] = np.nan
    assert not sample_stats(7, 0, nan, real, land, 0.1, 0.1).accepted
    assert passes_gate(0.0, 0.0, 0.1)  # a dry real day: nothing to fall short of
    assert not passes_gate(0.09, 1.0, 0.1) and passes_gate(0.1, 1.0, 0.1)
    m = summarize([s_low, s_ok])
    assert (m["samples_accepted"], m["samples_rejected"], m["acceptance_rate"]) == (1, 1, 0.5)


def test_noise_is_per_day_and_k():
    a = pair_normal(1, np.array([5, 5, 9]), np.array([0, 1, 0]), 6)
    b = pair_normal(1, np.array([9, 5]), np.array([0, 1]), 6)
    assert torch.equal(a[2], b[0]) and torch.equal(a[1], b[1])  # batch-independent
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], pair_normal(2, np.array([5]), np.array([0]), 6)[0])


# ---------------------------------------------------------------------------- day selection
def test_day_selection(prepared: Path, tmp_path: Path):
    ds = PreparedDataset.open(prepared)
    assert np.array_equal(select_days(ds, "heavy_only"), np.sort(ds.heavy_days))
    assert np.array_equal(select_days(ds, "split:val"), ds.split["val"])
    assert len(select_days(ds, "all")) == ds.n_days
    f = tmp_path / "days.txt"
    f.write_text("3\n# a comment\n3\n10\n")
    assert select_days(ds, f"file:{f}").tolist() == [3, 10]
    f.write_text("3\n999\n-4\n")
    with pytest.raises(DaySelectionError, match=r"2 day id\(s\) not in the dataset.*-4, 999"):
        select_days(ds, f"file:{f}")
    f.write_text("# nothing\n")
    with pytest.raises(DaySelectionError, match="selects no days"):
        select_days(ds, f"file:{f}")
    with pytest.raises(DaySelectionError, match="unknown split"):
        select_days(ds, "split:training")


# ------------------------------------------------------------------------ the CLI run's output
def test_output_files_and_shapes(sampled: dict, prepared: Path):
    ds = PreparedDataset.open(prepared)
    out = sampled["out"]
    import csv

    rows = list(csv.DictReader(open(out / "manifest.csv")))
    heavy = np.sort(ds.heavy_days)
    assert len(rows) == len(heavy) * K
    assert set(rows[0]) >= {"day", "k", "accepted", "mass_ratio", "wet_fraction", "max", "P99",
                            "spatial_corr"}
    accepted = [(int(r["day"]), int(r["k"])) for r in rows if r["accepted"] == "1"]
    M = len(accepted)
    assert M > 0
    Y, X = np.load(out / "Y_syn.npy"), np.load(out / "X_ref.npy")
    H, W = ds.hr_shape
    assert Y.shape == (M, 1, H, W) and X.shape == (M, ds.n_channels, *ds.lr_shape)
    assert np.load(out / "day_index.npy").tolist() == [d for d, _ in accepted]
    assert (Y >= 0).all() and (Y[:, 0][:, ~ds.land_mask] == 0).all()  # mm, sea 0
    per_sample = sorted(p.name for p in out.glob("day_*_sample_*.npy"))
    assert per_sample == sorted(f"{sample_stem(d, k)}.{kind}.npy" for d, k in accepted
                                for kind in ("Y_hr_syn", "X_lr_ref"))
    d0, k0 = accepted[0]
    y0 = np.load(out / f"{sample_stem(d0, k0)}.Y_hr_syn.npy")
    x0 = np.load(out / f"{sample_stem(d0, k0)}.X_lr_ref.npy")
    assert y0.shape == (1, H, W) and np.array_equal(y0, Y[0])
    assert np.array_equal(x0, ds.X_lr[d0])  # the real day's predictors, physical
    assert (out / "samples_heavy_days.png").stat().st_size > 0
    assert "sample done:" in sampled["line"] and "/runs/" in sampled["line"]


def test_samples_nc_is_cf_and_reads_back(sampled: dict, trained: dict, prepared: Path):
    import xarray as xr
    from conftest import cf_failures

    from precipgen.data.sources import load_netcdf

    out = sampled["out"]
    ds = PreparedDataset.open(prepared)
    days, ks, Y = np.load(out / "day_index.npy"), np.load(out / "k_index.npy"), np.load(out / "Y_syn.npy")
    with xr.open_dataset(out / "samples.nc") as nc:
        assert nc.attrs["Conventions"] == "CF-1.10" and trained["run_id"] in nc.attrs["source"]
        assert nc["precip"].dims == ("realization", "time", "y", "x")
        from precipgen.data.cf import precip_attrs

        assert nc["precip"].attrs["units"] == precip_attrs(ds.normalization.units, "")["units"]
        assert nc["source_day"].values.tolist() == sorted(set(days.tolist()))
        d, k = int(days[0]), int(ks[0])
        got = nc["precip"].sel(realization=k).values[nc["source_day"].values.tolist().index(d)]
        assert np.allclose(got[ds.land_mask], Y[0, 0][ds.land_mask])
        assert nc.attrs["mode"] == "posterior" and float(nc.attrs["temperature"]) == 1.0
        assert nc.attrs["model_run_id"] == trained["run_id"]
        assert [nc[c].attrs.get("units") for c in ds.channel_names] == ds.channel_units
    assert cf_failures(out / "samples.nc") == []
    # an amount per step of unknown length ("mm") needs --units to read back; mm/day stays
    units = None if ds.normalization.units in ("mm/day", "mm/h") else "mm/day"
    raw = load_netcdf([out / "samples.nc"], "precip", ds.channel_names, units=units)
    assert raw.Y.shape == Y.shape


def test_k_samples_of_one_day_differ(sampled: dict):
    out = sampled["out"]
    days, ks = np.load(out / "day_index.npy"), np.load(out / "k_index.npy")
    Y = np.load(out / "Y_syn.npy")
    both = [d for d in np.unique(days) if (days == d).sum() == K]
    assert both, "no day kept both samples"
    d = both[0]
    a, b = Y[(days == d) & (ks == 0)][0], Y[(days == d) & (ks == 1)][0]
    assert not np.array_equal(a, b)


def test_augmented_set_in_srdrn_layout(sampled: dict, prepared: Path):
    ds = PreparedDataset.open(prepared)
    aug = sampled["aug"]
    info = json.loads((aug / "augmentation.json").read_text())
    xp, yo = np.load(aug / PREDICTORS_FILE), np.load(aug / OBS_FILE)
    train = ds.split["train"]
    n_syn_train = int(np.isin(np.load(sampled["out"] / "day_index.npy"), train).sum())
    assert info["n_real"] == len(train) and info["n_synthetic"] == n_syn_train
    n, (h, w), (H, W) = len(train) + n_syn_train, ds.lr_shape, ds.hr_shape
    assert xp.shape == (n, h, w, ds.n_channels) and yo.shape == (n, H, W)
    sea = ~ds.land_mask
    assert np.isnan(yo[:, sea]).all() and not np.isnan(yo[:, ~sea]).any()
    assert np.array_equal(xp[: len(train)], np.asarray(ds.X_lr[train]).transpose(0, 2, 3, 1))
    assert np.array_equal(yo[: len(train)][:, ~sea], np.asarray(ds.Y_hr[train])[:, 0][:, ~sea])
    assert info["units"].startswith("physical")
    assert info["sources"]["sample_run_id"] == sampled["run_id"]


def test_run_has_lineage_tags(sampled: dict, trained: dict, prepared: Path, mlflow_server: str):
    from mlflow.tracking import MlflowClient

    ds = PreparedDataset.open(prepared)
    client = MlflowClient(mlflow_server)
    run = client.get_run(sampled["run_id"])
    tags = run.data.tags
    assert tags["upstream.model_run_id"] == trained["run_id"]
    assert tags["model_run_id"] == trained["run_id"]
    assert tags["dataset_digest"] == ds.digest
    assert tags["precipgen.entry_point"] == "sample"
    digests = {i.dataset.digest for i in run.inputs.dataset_inputs}
    assert ds.digest in digests and len(digests) == 2  # the dataset in, the synthetic set out
    m = run.data.metrics
    assert m["samples_accepted"] + m["samples_rejected"] == m["samples_total"]
    assert "mass_ratio_mean" in m and "generation_samples_per_sec" in m
    arts = {a.path for a in client.list_artifacts(sampled["run_id"], "synth")}
    assert {"synth/manifest.csv", "synth/Y_syn.npy", "synth/samples.nc"} <= arts


# ------------------------------------------------------------------- library: reproducibility
def _generate(out: Path, prepared: Path, ckpt: Path, seed: int, batch_size: int,
              mode: str = "posterior", precision: str = "fp32") -> Path:
    ds = PreparedDataset.open(prepared)
    m = open_cvae(str(ckpt))
    out.mkdir()
    st = SampleSettings(mode=mode, K=K, seed=seed, batch_size=batch_size, min_threshold=0.0,
                        precision=precision)
    build_synthetic_set(out, ds, m, select_days(ds, "split:val"), st, torch.device("cpu"),
                        {"mode": mode})
    return out


def test_same_seed_same_files_and_batching_does_not_matter(prepared: Path, trained: dict,
                                                           tmp_path: Path):
    a = _generate(tmp_path / "a", prepared, trained["checkpoint"], seed=5, batch_size=4)
    b = _generate(tmp_path / "b", prepared, trained["checkpoint"], seed=5, batch_size=4)
    names = sorted(p.name for p in a.iterdir() if p.suffix in (".npy", ".csv"))
    assert names == sorted(p.name for p in b.iterdir() if p.suffix in (".npy", ".csv"))
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    c = _generate(tmp_path / "c", prepared, trained["checkpoint"], seed=5, batch_size=1)
    np.testing.assert_allclose(np.load(c / "Y_syn.npy"), np.load(a / "Y_syn.npy"),
                               rtol=1e-4, atol=1e-5)
    d = _generate(tmp_path / "d", prepared, trained["checkpoint"], seed=6, batch_size=4)
    assert not np.array_equal(np.load(d / "Y_syn.npy"), np.load(a / "Y_syn.npy"))


def test_bf16_samples_are_the_fp32_samples_within_bf16_rounding(
        tracking_server: str, prepared: Path, trained: dict, tmp_path: Path,
        capsys: pytest.CaptureFixture):
    """--precision bf16 (autocast, for speed) draws the same noise and gives the same fields up
    to bfloat16's ~3 significant digits, in mm; an unknown precision is refused."""
    a = np.load(_generate(tmp_path / "a", prepared, trained["checkpoint"], 5, 4) / "Y_syn.npy")
    b = np.load(_generate(tmp_path / "b", prepared, trained["checkpoint"], 5, 4,
                          precision="bf16") / "Y_syn.npy")
    assert b.dtype == np.float32 and np.isfinite(b).all()
    assert not np.array_equal(a, b)  # it did run in bf16
    rel = np.abs(a - b).mean() / np.abs(a).mean()
    assert rel < 0.05, rel
    assert cli.main(["sample", "--data", str(prepared), "--model", str(trained["checkpoint"]),
                     "--precision", "fp16", "--output", str(tmp_path / "c")]) == 2
    assert "sampling.precision" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------------- bad input
def test_model_for_another_grid_is_an_error(trained: dict, tmp_path: Path):
    other = PreparedDataset.open(make_prepared(tmp_path, days=40, H=28, W=28, C=2))
    m = open_cvae(str(trained["checkpoint"]))
    with pytest.raises(ValueError, match=r"high-res 24x24.*C=3.*high-res 28x28.*C=2"):
        check_compatible(m, other, str(trained["checkpoint"]))


def test_bad_input_refused_before_any_output(tracking_server: str, prepared: Path, trained: dict,
                                             tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "synth"
    base = ["sample", "--model", str(trained["checkpoint"]), "--data", str(prepared)]
    days = tmp_path / "days.txt"
    days.write_text("# none\n")
    assert cli.main([*base, "--output", str(out), "--days", f"file:{days}"]) == 2
    assert "selects no days" in capsys.readouterr().err and not out.exists()
    out.mkdir()
    assert cli.main([*base, "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and not any(out.iterdir())
    other = make_prepared(tmp_path, days=40, H=28, W=28, C=2)
    assert cli.main(["sample", "--model", str(trained["checkpoint"]), "--data", str(other),
                     "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "24x24" in err and "28x28" in err and not (tmp_path / "x").exists()


# ------------------------------------------------------ SRDRN normalisation: prepare -> augment
def test_augmented_roundtrips_srdrn_normalisation(tracking_server: str, tmp_path: Path):
    """Normalised SRDRN files -> prepare (inverts) -> augment (re-applies) == the files."""
    rng = np.random.default_rng(0)
    N, H, W, f, C = 40, 12, 12, 3, 2
    land = np.ones((H, W), bool)
    land[:, :2] = False
    y_mm = rng.gamma(0.7, 2.0, (N, H, W)).astype(np.float32) * (rng.random((N, H, W)) > 0.3)
    y_mm[:, ~land] = np.nan  # SRDRN obs: NaN at sea
    x_phys = rng.normal(5.0, 2.0, (N, H // f, W // f, C)).astype(np.float32)
    xm, xs = x_phys.mean((0, 1, 2)), x_phys.std((0, 1, 2))
    ym, ys = float(np.nanmean(np.log1p(y_mm))), float(np.nanstd(np.log1p(y_mm)))
    x_norm = ((x_phys - xm) / xs).astype(np.float32)
    y_norm = ((np.log1p(y_mm) - ym) / ys).astype(np.float32)
    for name, arr in {"pred.npy": x_norm, "obs.npy": y_norm,
                      "mean.npy": np.r_[xm, ym].astype(np.float32),
                      "std.npy": np.r_[xs, ys].astype(np.float32)}.items():
        np.save(tmp_path / name, arr)
    prepared = tmp_path / "prepared"
    rc = cli.main(["prepare", "--source", "srdrn", "--predictors", str(tmp_path / "pred.npy"),
                   "--obs", str(tmp_path / "obs.npy"), "--mean", str(tmp_path / "mean.npy"),
                   "--std", str(tmp_path / "std.npy"), "--output", str(prepared)])
    assert rc == 0
    ds = PreparedDataset.open(prepared)
    assert srdrn_normalisation(ds) is not None
    train, val = ds.split["train"], ds.split["val"]
    # two "synthetic" samples: one of a training day (kept), one of a validation day (leak: out)
    syn_days = np.array([train[1], val[0]])
    syn_Y = np.asarray(ds.Y_hr[syn_days]) * 1.5
    syn_X = np.asarray(ds.X_lr[syn_days])
    out = tmp_path / "aug"
    out.mkdir()
    info = write_augmented(out, ds, syn_Y, syn_X, syn_days, {"sources": {}})
    assert (info["n_real"], info["n_synthetic"], info["n_synthetic_excluded_not_train"]) == (
        len(train), 1, 1)
    xp, yo = np.load(out / PREDICTORS_FILE), np.load(out / OBS_FILE)
    assert xp.shape == (len(train) + 1, H // f, W // f, C) and yo.shape == (len(train) + 1, H, W)
    np.testing.assert_allclose(xp[: len(train)], x_norm[train], atol=1e-4)
    np.testing.assert_allclose(yo[: len(train)], y_norm[train], atol=1e-4)  # NaN sea == NaN sea
    norm = srdrn_normalisation(ds)
    back = norm.obs_inverse(yo[-1])
    np.testing.assert_allclose(back[land], syn_Y[0, 0][land], rtol=1e-4, atol=1e-4)
    assert np.isnan(back[~land]).all()
    assert info["units"] == "SRDRN-normalised"

