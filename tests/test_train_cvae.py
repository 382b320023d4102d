"""``precipgen train_cvae`` end to end: MLflow run contents, resume, DDP, bad input."""

from __future__ import annotations

import csv
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, REPO, run_cli
from helpers import make_prepared

from precipgen.cli import main
from precipgen.models.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

TINY = [
    "--d_z", "8", "--batch_size", "4", "--seed", "7",
    "--set", "model.base_filters=8", "--set", "model.d_x=16", "--set", "model.d_y=32",
    "--set", "train.max_batches_per_epoch=3", "--set", "loss.warmup_epochs=2",
    "--set", "train.figure_interval=0", "--set", "train.checkpoint_interval=1",
]
EPOCH_METRICS = ["train_loss", "val_loss", "val_L_rec", "val_KL", "val_MAE_all", "val_MAE_tail",
                 "val_RMSE_all", "val_mass_bias", "val_CRPS", "beta", "lr"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("cvae_data"))


def read_csv(path: Path) -> list[dict[str, float]]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def run_id_from(text: str) -> str:
    m = re.search(r"MLflow run: (?:.*?runs/)?([0-9a-f]{32})", text)
    assert m, f"no MLflow run line in:\n{text}"
    return m.group(1)


def test_train_cvae_logs_run_to_mlflow_server(tracking_server: str, prepared: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from precipgen import tracking

    out = tmp_path / "out"
    proc = run_cli("train_cvae", "--data", str(prepared), "--epochs", "2", "--output_dir", str(out),
                   *TINY, "--set", "train.figure_interval=1", "--prior", "conditional")
    assert "Epoch 1/2 |" in proc.stdout and "Epoch 2/2 |" in proc.stdout
    assert f"MLflow run: {tracking_server}" in proc.stdout
    rid = run_id_from(proc.stdout)

    client = MlflowClient(tracking_server)
    run = client.get_run(rid)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.prior"] == "conditional" and run.data.params["model.d_z"] == "8"
    for key in EPOCH_METRICS:
        hist = client.get_metric_history(rid, key)
        assert sorted(m.step for m in hist) == [1, 2], key
        assert all(np.isfinite(m.value) for m in hist), key
    assert run.data.metrics["val_MAE_tail"] > 0 and run.data.metrics["val_CRPS"] > 0

    def listing(path: str = "") -> set[str]:
        return {a.path for a in client.list_artifacts(rid, path)}

    assert {"checkpoints", "logs", "figures", "config.yaml"} <= listing()
    assert {"checkpoints/cvae_best.pt", "checkpoints/cvae_last.pt"} <= listing("checkpoints")
    assert "logs/train_log.csv" in listing("logs")
    assert {"figures/val_heavy_days_epoch_001.png", "figures/val_heavy_days_epoch_002.png"} <= listing("figures")
    assert run.inputs.dataset_inputs[0].dataset.digest

    # local outputs: CSV with the seed's names, periodic checkpoints
    rows = read_csv(out / "logs" / "train_log.csv")
    assert [r["epoch"] for r in rows] == [1.0, 2.0] and set(EPOCH_METRICS) <= set(rows[0])
    assert (out / "checkpoints" / "cvae_epoch_002.pt").exists()

    # the registered model: alias candidate -> this run; predicts physical-unit samples
    version = client.get_model_version_by_alias("cvae", "candidate")
    assert version.run_id == rid
    assert "batch-first (N, num_samples, 1, H, W)" in version.description
    import json

    norm = json.loads((prepared / "metadata" / "normalization.json").read_text())
    assert ", ".join(norm["channel_names"]) in version.description
    assert f"precipitation in {norm['units']}" in version.description
    model = tracking.load_pyfunc("models:/cvae@candidate")
    assert model.metadata.get_output_schema() is not None
    assert model.metadata.saved_input_example_info is not None
    x = np.load(prepared / "X_lr.npy")[:3]
    y = model.predict(x, params={"num_samples": 2, "temperature": 1.0, "seed": 1})
    land = np.load(prepared / "statics.npy")[0] > 0.5
    assert y.shape == (3, 2, 1, 24, 24) and (y >= 0).all() and (y[..., ~land] == 0).all()
    # float64 (xarray's default) works and gives the same samples
    y64 = model.predict(x.astype(np.float64), params={"num_samples": 2, "temperature": 1.0, "seed": 1})
    np.testing.assert_array_equal(y, y64)
    with pytest.raises(Exception, match="num_sample"):  # a misspelled param is refused
        model.predict(x, params={"num_sample": 2})


def test_resume_gives_the_uninterrupted_history(sqlite_tracking: str, prepared: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from precipgen import tracking

    base = ["train_cvae", "--data", str(prepared), *TINY]
    assert main([*base, "--epochs", "4", "--output_dir", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main([*base, "--epochs", "2", "--output_dir", str(tmp_path / "b")]) == 0
    first = run_id_from(capsys.readouterr().out)
    assert main([*base, "--epochs", "4", "--output_dir", str(tmp_path / "b"), "--resume"]) == 0
    resumed = capsys.readouterr().out
    assert "Epoch 3/4" in resumed and "Epoch 1/4" not in resumed
    assert run_id_from(resumed) == first  # the same MLflow run continues

    a = read_csv(tmp_path / "a" / "logs" / "train_log.csv")
    b = read_csv(tmp_path / "b" / "logs" / "train_log.csv")
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]
    for key in EPOCH_METRICS:
        assert [r[key] for r in b] == pytest.approx([r[key] for r in a], abs=1e-6), key
    for key in ("val_loss", "val_CRPS", "train_loss"):  # each epoch logged exactly once
        assert [s for s, _ in tracking.metric_history(first, key)] == [1, 2, 3, 4]

    # a checkpoint that does not fit the configured model: clear error naming tensors
    code = main([*base, "--epochs", "5", "--output_dir", str(tmp_path / "b"), "--resume",
                 "--d_z", "16"])
    err = capsys.readouterr().err
    assert code == 2 and "does not fit the configured model" in err and "latent_head" in err
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "cvae_last.pt")["epoch"] == 4
    assert tracking.get_run(first).info.status == "FINISHED"


def test_ddp_two_processes_log_once(sqlite_tracking: str, prepared: Path, tmp_path: Path) -> None:
    from precipgen import tracking

    out = tmp_path / "ddp"
    proc = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "precipgen.cli",
         "train_cvae", "--data", str(prepared), "--epochs", "2", "--output_dir", str(out), *TINY],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("Epoch 1/2 |") == 1 and proc.stdout.count("MLflow run:") == 1
    rid = run_id_from(proc.stdout)
    tracking.setup()
    from mlflow.tracking import MlflowClient

    exp = MlflowClient().get_experiment_by_name("precipgen")
    runs = MlflowClient().search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [rid]
    assert [s for s, _ in tracking.metric_history(rid, "val_loss")] == [1, 2]
    assert [r["epoch"] for r in read_csv(out / "logs" / "train_log.csv")] == [1, 2]


def test_nan_loss_stops_with_batch_index(sqlite_tracking: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = make_prepared(tmp_path, days=40, seed=1)
    x = np.load(data / "X_lr.npy", mmap_mode="r+")
    x[:] = np.nan
    x.flush()
    del x
    code = main(["train_cvae", "--data", str(data), "--epochs", "2",
                 "--output_dir", str(tmp_path / "out"), *TINY])
    err = capsys.readouterr().err
    assert code == 2
    assert "non-finite loss" in err and "epoch 1, batch 0" in err


def test_bad_input_is_clear(sqlite_tracking: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    data = make_prepared(tmp_path, days=40, seed=2)  # val split: 6 days
    code = main(["train_cvae", "--data", str(data), "--output_dir", str(tmp_path / "o"), *TINY,
                 "--batch_size", "8"])
    err = capsys.readouterr().err
    assert code == 2 and "batch size 8 is larger than the val split" in err and "(6 days)" in err

    (data / "metadata" / "thresholds.json").unlink()
    code = main(["train_cvae", "--data", str(data), "--output_dir", str(tmp_path / "o"), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "thresholds.json" in err

    code = main(["train_cvae", "--data", str(tmp_path / "nope"), *TINY])
    assert code == 2 and "not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_mlflow_run_train_cvae_on_prepared_mrms(tracking_server: str, mrms_path: Path,
                                                tmp_path: Path) -> None:
    """The issue's entry point on real radar data: hourly tiles, mm/h, 3 predictor channels."""
    from mlflow.tracking import MlflowClient

    data = tmp_path / "mrms"
    run_cli("prepare", "--source", "netcdf", "--input", str(mrms_path), "--target", "precip",
            "--predictor_vars", "predictors", "--channel_dim", "channel", "--output", str(data))
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_server,
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    tiny = ("model.d_z=4 model.base_filters=4 model.d_x=8 model.d_y=8 "
            "train.max_batches_per_epoch=3 train.batch_size=4 train.figure_interval=0")
    proc = subprocess.run(
        [str(BIN / "mlflow"), "run", str(REPO), "-e", "train_cvae", "--env-manager", "local",
         "-P", f"data={data}", "-P", "epochs=2", "-P", f"output_dir={tmp_path / 'out'}",
         "-P", f"overrides={tiny}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_id = re.search(r"Run \(ID '([0-9a-f]+)'\) succeeded", proc.stderr).group(1)
    run = MlflowClient(tracking_server).get_run(run_id)
    assert run.data.tags["precipgen.entry_point"] == "train_cvae"
    assert run.data.tags["upstream.dataset_run_id"] == (data / ".precipgen_run").read_text().strip()
    assert np.isfinite(run.data.metrics["val_MAE_all"]) and run.data.metrics["epoch"] == 2
    assert (tmp_path / "out" / "checkpoints" / "cvae_best.pt").exists()
