"""Section 6: every bad input gives rc 2, a message naming file/shape/day, and no output dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from precipgen.data import validate
from precipgen.data.validate import InputError

N, C, h, w, F = 40, 2, 4, 3, 4


def srdrn_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Small SRDRN-layout arrays: predictors (N, h, w, C), obs (N, H, W) with a NaN sea column."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, h, w, C)).astype(np.float32)
    y = rng.gamma(0.5, 4.0, size=(N, h * F, w * F)).astype(np.float32)
    y[:, :, 0] = np.nan  # sea
    return x, y


def write(tmp: Path, **arrays: np.ndarray) -> dict[str, Path]:
    paths = {}
    for name, arr in arrays.items():
        paths[name] = tmp / f"{name}.npy"
        np.save(paths[name], arr)
    return paths


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # A throwaway store: no bad input may reach it, but never touch the repo's mlflow.db.
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}


def prepare_fails(tmp: Path, env: dict[str, str], *args: str) -> str:
    out = tmp / "prepared"
    proc = run_cli("prepare", "--output", str(out), *args, env=env, check=False, cwd=tmp)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists(), "a failed prepare must not leave an output directory"
    assert not list(tmp.glob(".prepared.tmp-*")), "temporary directory left behind"
    return proc.stderr


def srdrn_args(p: dict[str, Path]) -> list[str]:
    args = ["--source", "srdrn", "--predictors", str(p["x"]), "--obs", str(p["y"])]
    for k in ("xt", "yt", "mask"):
        flag = {"xt": "--predictors_test", "yt": "--obs_test", "mask": "--land_mask"}[k]
        if k in p:
            args += [flag, str(p[k])]
    return args


# ------------------------------------------------------------------------- CLI, end to end
def test_missing_file(tmp_path, env):
    x, y = srdrn_arrays()
    p = write(tmp_path, x=x)
    missing = tmp_path / "nope" / "obs.npy"
    err = prepare_fails(tmp_path, env, "--source", "srdrn", "--predictors", str(p["x"]),
                        "--obs", str(missing))
    assert f"obs file not found: {missing}" in err


def test_test_file_shapes_disagree(tmp_path, env):
    x, y = srdrn_arrays()
    p = write(tmp_path, x=x, y=y, xt=x[:10, :, :2], yt=y[:10])
    err = prepare_fails(tmp_path, env, *srdrn_args(p))
    assert "shapes disagree" in err
    assert str(p["xt"]) in err and str(p["x"]) in err
    assert f"(4, 2, {C})" in err and f"(4, 3, {C})" in err


def test_land_mask_shape_disagrees(tmp_path, env):
    x, y = srdrn_arrays()
    p = write(tmp_path, x=x, y=y, mask=np.ones((h * F, w * F + 1)))
    err = prepare_fails(tmp_path, env, *srdrn_args(p))
    assert "shapes disagree" in err and "(16, 13)" in err and "(16, 12)" in err
    assert str(p["mask"]) in err


def test_n_differs(tmp_path, env):
    x, y = srdrn_arrays()
    p = write(tmp_path, x=x, y=y[:-3])
    err = prepare_fails(tmp_path, env, *srdrn_args(p))
    assert f"predictors {p['x']} has N={N}" in err and f"obs {p['y']} has N={N - 3}" in err


def test_nan_in_predictors(tmp_path, env):
    x, y = srdrn_arrays()
    x[7, 0, 0, 0] = np.nan
    x[3, 1, 2, 1] = np.nan
    x[3, 2, 2, 1] = np.inf
    p = write(tmp_path, x=x, y=y)
    err = prepare_fails(tmp_path, env, *srdrn_args(p))
    assert "3 NaN/non-finite values on 2 days (first day indices: 3, 7)" in err
    assert str(p["x"]) in err


def test_negative_precip_on_land(tmp_path, env):
    x, y = srdrn_arrays()
    y[5, 3, 4] = -1.0
    y[9, 3, 4] = -2.0
    p = write(tmp_path, x=x, y=y)
    err = prepare_fails(tmp_path, env, *srdrn_args(p))
    assert "2 negative precipitation values on land" in err and "5, 9" in err
    assert str(p["y"]) in err


def test_nonfinite_precip_on_land_mask(tmp_path, env):
    """With an explicit land mask, NaN on a land pixel is missing data, not sea."""
    x, y = srdrn_arrays()
    mask = np.ones((h * F, w * F), dtype=np.float32)
    mask[:, 0] = 0
    y[11, 5, 5] = np.nan
    p = write(tmp_path, x=x, y=y, mask=mask)
    err = prepare_fails(tmp_path, env, *srdrn_args(p))
    assert "1 non-finite (NaN/inf) precipitation values on land" in err
    assert "first day indices: 11" in err


def test_factor_not_integer(tmp_path, env):
    x, y = srdrn_arrays()
    p = write(tmp_path, x=x, y=y[:, :, :-1])
    err = prepare_fails(tmp_path, env, *srdrn_args(p))
    assert "H/h and W/w must be one integer factor" in err
    assert "(H, W)=(16, 11)" in err and "(h, w)=(4, 3)" in err


def test_too_few_days(tmp_path, env):
    x, y = srdrn_arrays()
    p = write(tmp_path, x=x[:12], y=y[:12])
    err = prepare_fails(tmp_path, env, *srdrn_args(p))
    assert "too few days for the split: 12 days" in err and "train 8" in err


def test_unknown_config_key(tmp_path, env):
    err = prepare_fails(tmp_path, env, "--days", "30", "--set", "data.val_fractoin=0.2")
    assert "unknown config key 'data.val_fractoin' (did you mean 'val_fraction'?)" in err


def test_netcdf_missing_variable(tmp_path, env, mrms_path):
    err = prepare_fails(tmp_path, env, "--source", "netcdf", "--input", str(mrms_path),
                        "--target", "precipitation", "--predictor_vars", "predictors",
                        "--channel_dim", "channel")
    assert f"NetCDF file {mrms_path} has no variable 'precipitation'" in err
    assert "'precip'" in err  # lists what the file has


def test_existing_output_refused_without_overwrite(tmp_path, env):
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    proc = run_cli("prepare", "--output", str(out), "--days", "30", env=env, check=False,
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert f"output directory {out} already exists; pass --overwrite" in proc.stderr
    assert (out / "keep.txt").read_text() == "user data"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


# -------------------------------------------------------------------------------- unit
def test_check_factor_returns_factor_and_rejects_unequal():
    assert validate.check_factor((156, 132), (13, 11), "obs", "pred") == 12
    with pytest.raises(InputError, match=r"H/h=2, W/w=3"):
        validate.check_factor((8, 9), (4, 3), "obs", "pred")


def test_precip_checks_ignore_sea():
    y = np.zeros((3, 1, 4, 4), dtype=np.float32)
    land = np.ones((4, 4), bool)
    land[:, 0] = False
    y[:, 0, :, 0] = np.nan  # sea: fine
    y[1, 0, 2, 0] = -5  # negative at sea: not checked
    validate.check_precip_on_land(y, land, "obs")
    y[2, 0, 1, 1] = np.inf
    with pytest.raises(InputError, match=r"1 non-finite .*first day indices: 2\)"):
        validate.check_precip_on_land(y, land, "obs")


def test_first_days_are_truncated():
    x = np.zeros((20, 1, 2, 2), dtype=np.float32)
    x[::2] = np.nan
    with pytest.raises(InputError, match=r"first day indices: 0, 2, 4, 6, 8, \.\.\.\)"):
        validate.check_predictors_finite(x, "X")


def test_split_sizes_message():
    with pytest.raises(InputError, match="need at least train 10 / val 1 / test 1"):
        validate.check_split_sizes({"train": 10, "val": 0, "test": 1}, 11, "fractions")
