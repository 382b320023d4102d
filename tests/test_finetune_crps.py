"""pretrain_vae -> finetune_crps end to end on a tiny prepared dataset, against a real
MLflow server: registration, lineage, outputs, frozen encoder, generative model, lower
Val_CRPS; the clear error without a pretrained model; ``mlflow run -e finetune_crps``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from helpers import make_prepared
from mlflow.tracking import MlflowClient

from precipgen.cli import main
from precipgen.data.datasets import land_mask_tensor
from precipgen.data.store import PreparedDataset
from precipgen.models.checkpoint import load_checkpoint
from precipgen.models.vae3d import build_from_checkpoint
from precipgen.train.common import p95_mm, val_loader
from precipgen.train.crps import evaluate_ensemble

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "vae3d.base_filters=4", "--set", "vae3d.latent_channels=2",
        "--set", "vae3d.max_batches_per_epoch=4", "--set", "finetune.max_batches_per_epoch=6"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("data"), days=64, H=24, W=24, factor=4)


def pretrain(data: Path, out: Path, *extra: str) -> None:
    assert main(["pretrain_vae", "--data", str(data), "--epochs", "2", "--window_days", "4",
                 "--lr", "1e-3", "--output_dir", str(out), *TINY, *extra]) == 0


def only_dir(root: Path) -> Path:
    (d,) = [p for p in root.iterdir() if p.is_dir()]
    return d


def test_finetune_without_pretrained_model_fails_clearly(sqlite_tracking, prepared, capsys):
    assert main(["finetune_crps", "--data", str(prepared), "--pretrained", ""]) == 2
    err = capsys.readouterr().err
    assert "no --pretrained given" in err and "vae3d-deterministic" in err
    assert "pretrain_vae" in err


@pytest.mark.slow
def test_pretrain_then_finetune_makes_the_model_generative(tracking_server, prepared, tmp_path,
                                                           capsys):
    pretrain(prepared, tmp_path / "pre", "--set", "vae3d.terrain_features=2")
    pre_dir = only_dir(tmp_path / "pre")
    client = MlflowClient(tracking_server)
    pre_run = (pre_dir / ".precipgen_run").read_text().strip()
    metrics = client.get_run(pre_run).data.metrics
    for key in ("val_MSE", "val_loss", "val_KL", "val_MAE_all", "val_MAE_tail", "train_loss"):
        assert key in metrics, key
    assert client.get_model_version_by_alias("vae3d-deterministic", "latest").run_id == pre_run

    # Val_CRPS of the pretrained model before any fine-tuning (same noise as validation)
    pre_ck = load_checkpoint(pre_dir / "checkpoints" / "model_best.pt")
    ds = PreparedDataset.open(prepared)
    before = evaluate_ensemble(build_from_checkpoint(pre_ck), val_loader(ds, 4, 4), ds,
                               land_mask_tensor(ds), p95_mm(ds), 6, 2, 42, torch.device("cpu"))

    capsys.readouterr()
    # --pretrained "" = models:/vae3d-deterministic@latest; chunk 2 < 6 members: chunked gradient
    assert main(["finetune_crps", "--data", str(prepared), "--pretrained", "", "--epochs", "2",
                 "--lr", "3e-3", "--crps_samples", "6", "--chunk_size", "2",
                 "--checkpoint_interval", "1", "--output_dir", str(tmp_path / "ft"), *TINY,
                 "--set", "finetune.calibrate_noise=true"]) == 0
    out = capsys.readouterr().out
    assert "🎯 CRPS Gen Epoch 2: CRPS=" in out and ", Val_CRPS=" in out
    assert "SUCCESS: Model is now GENERATIVE" in out

    run_dir = only_dir(tmp_path / "ft")
    assert run_dir.name.startswith("vae_generative_crps_")
    for name in ("checkpoints/best_model.pth", "checkpoints/checkpoint_epoch_1.pth",
                 "checkpoints/checkpoint_epoch_2.pth", "crps_generative_history.csv",
                 "crps_generative_iteration_history.csv", "generative_config.yaml"):
        assert (run_dir / name).exists(), name
    ft_run = (run_dir / ".precipgen_run").read_text().strip()
    run = client.get_run(ft_run)
    assert run.data.tags["upstream.pretrained_run_id"] == pre_run
    m = run.data.metrics
    assert m["is_generative"] == 1.0 and m["generative_variance"] > 1e-3
    for key in ("CRPS", "Val_CRPS", "val_spread", "val_spread_skill", "val_MAE_tail"):
        assert key in m, key
    assert len(client.get_metric_history(ft_run, "iter_CRPS")) == 12  # 2 epochs x 6 batches
    artifacts = {a.path for a in client.list_artifacts(ft_run)}
    assert {"crps_generative_history.csv", "generative_config.yaml", "checkpoints"} <= artifacts

    # encoder frozen: bit-identical to the pretrained one; decoder changed
    ft_ck = load_checkpoint(run_dir / "checkpoints" / "best_model.pth")
    enc = [k for k in pre_ck["model_state_dict"] if k.startswith(("encoder.", "fc_mu.", "fc_logvar."))]
    assert enc
    for k in enc:
        assert torch.equal(pre_ck["model_state_dict"][k], ft_ck["model_state_dict"][k]), k
    assert not torch.equal(pre_ck["model_state_dict"]["dec_out.weight"],
                           ft_ck["model_state_dict"]["dec_out.weight"])
    # fine-tuning lowered Val_CRPS (mm)
    assert m["best_Val_CRPS"] < before["Val_CRPS"], (m["best_Val_CRPS"], before["Val_CRPS"])

    # the noise scale was calibrated on the validation windows and written into the checkpoint
    assert "spread calibration on the validation split: coarse-block noise x" in out
    curve = np.loadtxt(run_dir / "spread_calibration.csv", delimiter=",", skiprows=1, ndmin=2)
    factor = m["noise_calibration_factor"]
    (chosen,) = curve[np.isclose(curve[:, 0], factor)]
    assert chosen[1] == curve[:, 1].min()  # the lowest Val_CRPS of every factor tried
    assert m["Val_CRPS_calibrated"] == pytest.approx(chosen[1], rel=1e-6)
    assert (curve[:, 0] == 1.0).sum() == 1  # the uncalibrated model was scored
    # written into the checkpoint: coarse blocks x factor, full-res noise as trained
    assert ft_ck["hparams"]["cond_noise_scale"] == pytest.approx(factor)  # noise_scale 1.0
    assert ft_ck["hparams"]["cond_noise_hr_factor"] == pytest.approx(1 / factor)
    assert ft_ck["hparams"]["terrain_features"] == 2

    # registered vae3d-crps: a pyfunc that returns an ensemble in mm
    model = mlflow.pyfunc.load_model("models:/vae3d-crps@latest")
    x = np.asarray(ds.X_lr[:6], dtype=np.float32)
    ens = model.predict(x, params={"num_samples": 3})
    assert ens.shape == (6, 3, 1, 24, 24) and (ens >= 0).all() and ens.var(axis=1).mean() > 0


def has_entry(name: str) -> bool:
    mlproject = REPO / "MLproject"
    return mlproject.exists() and f"\n  {name}:" in mlproject.read_text()


@pytest.mark.slow
@pytest.mark.skipif(not has_entry("finetune_crps"), reason="MLproject has no finetune_crps entry yet")
def test_mlflow_run_finetune_crps(tracking_server, prepared, tmp_path):
    pretrain(prepared, tmp_path / "pre")
    ckpt = only_dir(tmp_path / "pre") / "checkpoints" / "model_best.pt"
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_server,
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(var, None)
    proc = subprocess.run(
        [f"{bin_dir}/mlflow", "run", ".", "-e", "finetune_crps", "--env-manager", "local",
         "--experiment-name", "precipgen",
         "-P", f"pretrained={ckpt}", "-P", f"data={prepared}", "-P", "epochs=1",
         "-P", "crps_samples=4", "-P", "chunk_size=2", "-P", "lr=1e-3",
         "-P", f"output_dir={tmp_path / 'ft'}",
         "-P", "overrides=finetune.max_batches_per_epoch=2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "🎯 CRPS Gen Epoch 1: CRPS=" in proc.stdout + proc.stderr
    run_dir = only_dir(tmp_path / "ft")
    assert (run_dir / "checkpoints" / "best_model.pth").exists()
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_server)
    (run,) = c.search_runs([c.get_experiment_by_name("precipgen").experiment_id],
                           "tags.`mlflow.project.entryPoint` = 'finetune_crps'")
    assert run.info.run_name == "finetune_crps"  # named after its entry point, as on the CLI
    assert "" not in run.data.params.values()  # parameters not given are not logged
    assert "path.data.path" in run.data.tags  # locations are tags, not hyperparameters


def test_ddp_two_processes_pretrain_and_finetune_log_once(sqlite_tracking, prepared, tmp_path):
    """Both 3D-VAE steps under torchrun (gloo): one MLflow run each, one value per epoch, and the
    chunked CRPS step (which bypasses DDP's forward) still trains on both ranks."""
    from mlflow.tracking import MlflowClient

    from precipgen import tracking

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone",
                "--nproc_per_node", "2", "-m", "precipgen.cli"]
    for step, extra in (
        ("pretrain_vae", ["--window_days", "4", "--lr", "1e-3", "--output_dir", str(tmp_path / "pre")]),
        ("finetune_crps", ["--pretrained", "models:/vae3d-deterministic@latest",
                           "--crps_samples", "4", "--chunk_size", "2", "--lr", "1e-3",
                           "--output_dir", str(tmp_path / "crps")]),
    ):
        proc = subprocess.run(
            [*torchrun, step, "--data", str(prepared), "--epochs", "2", "--batch_size", "2", *extra,
             *TINY], capture_output=True, text=True, cwd=tmp_path, timeout=600, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(list((tmp_path / "pre").iterdir())) == 1  # one run dir, made by rank 0
    assert len(list((tmp_path / "crps").iterdir())) == 1
    tracking.setup()
    client = MlflowClient()
    exp = client.get_experiment_by_name("precipgen")
    for entry, metric in (("pretrain_vae", "val_MSE"), ("finetune_crps", "Val_CRPS")):
        runs = client.search_runs([exp.experiment_id], f"tags.`precipgen.entry_point` = '{entry}'")
        assert len(runs) == 1, entry
        assert [s for s, _ in tracking.metric_history(runs[0].info.run_id, metric)] == [1, 2]
