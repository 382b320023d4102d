"""`precipgen main`: every step a child run of one parent; a re-run reuses unchanged steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BIN, REPO, run_cli
from mlflow.tracking import MlflowClient

STEPS = ["prepare", "pretrain_vae", "finetune_crps", "train_cvae", "sample", "evaluate"]


@pytest.mark.slow
def test_main_runs_every_step_as_child_runs_then_reuses_them(tracking_server: str, tmp_path: Path):
    root = tmp_path / "pipe"
    args = ["main", "--profile", "tiny", "--output_root", str(root),
            "--report_dir", str(tmp_path / "reports"), "--branches", "parallel"]
    first = run_cli(*args, timeout=900)
    assert "6 steps (0 reused)" in first.stdout
    assert "branches run in parallel" in first.stdout
    # each branch's step wrote its console output to a log; its summary line is echoed
    assert "train_cvae done:" in (root / "logs" / "train_cvae.log").read_text()
    assert "train_cvae done:" in first.stdout and "finetune_crps: best Val_CRPS" in first.stdout

    client = MlflowClient(tracking_server)
    exp = client.get_experiment_by_name("precipgen")
    parents = client.search_runs([exp.experiment_id], "tags.`precipgen.entry_point` = 'main'")
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_entry = {c.data.tags.get("precipgen.entry_point"): c for c in children}
    assert set(STEPS) <= set(by_entry), sorted(by_entry)
    assert all(by_entry[s].info.status == "FINISHED" for s in STEPS)
    # the two model branches overlapped in time; evaluate waited for both
    run = {s: by_entry[s].info for s in STEPS}
    assert run["train_cvae"].start_time < run["finetune_crps"].end_time
    assert run["pretrain_vae"].start_time < run["sample"].end_time
    assert run["evaluate"].start_time >= max(run["finetune_crps"].end_time, run["sample"].end_time)
    # lineage: finetune_crps consumed pretrain_vae's model, evaluate all three models
    pre_id = by_entry["pretrain_vae"].info.run_id
    assert by_entry["finetune_crps"].data.tags["upstream.pretrained_run_id"] == pre_id
    assert by_entry["evaluate"].data.tags["upstream.deterministic_run_id"] == pre_id
    assert parent.data.tags["step.evaluate_run_id"] == by_entry["evaluate"].info.run_id
    # the SRDRN arms are children of the evaluate run, not re-openings of it
    eval_id = by_entry["evaluate"].info.run_id
    arms = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{eval_id}'")
    assert {a.data.tags["precipgen.entry_point"] for a in arms} <= {
        "augmentation_augmented", "augmentation_real"}  # none when no sample passed the gate
    assert (root / "prepared" / "metadata" / "provenance.json").exists()
    assert (tmp_path / "reports" / "evaluate-tiny" / "report.html").exists()

    second = run_cli(*args, timeout=900)
    assert "6 steps (6 reused" in second.stdout
    for step in STEPS:
        assert f"{step}: reusing finished run {by_entry[step].info.run_id}" in second.stdout


def test_step_key_changes_with_arguments_and_profile():
    """Any change of a step's arguments (they name the upstream run ids) or profile re-runs it."""
    from precipgen.steps.main import Step, _step_key

    a = Step("prepare", ["prepare", "--days", "10"])
    assert _step_key(a, "tiny") == _step_key(Step("prepare", ["prepare", "--days", "10"]), "tiny")
    assert _step_key(a, "tiny") != _step_key(Step("prepare", ["prepare", "--days", "11"]), "tiny")
    assert _step_key(a, "tiny") != _step_key(a, "quick")


def test_auto_branches_run_in_parallel_only_where_they_are_balanced():
    from precipgen.steps.main import PROFILES, runs_branches_in_parallel

    assert runs_branches_in_parallel("auto", PROFILES["standard"], cpus=2)
    assert not runs_branches_in_parallel("auto", PROFILES["standard"], cpus=1)
    assert not runs_branches_in_parallel("auto", PROFILES["quick"], cpus=16)
    assert runs_branches_in_parallel("parallel", PROFILES["quick"], cpus=1)
    assert not runs_branches_in_parallel("sequential", PROFILES["full"], cpus=16)


SERIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "mrms-hourly" / "mrms_hourly_series.nc"


@pytest.mark.slow
def test_main_on_your_own_netcdf_data_then_on_the_prepared_dir(fresh_server: str, tmp_path: Path):
    """`main --data FILE` runs the whole pipeline on real radar data: no oracle, units of the
    file (mm/h) everywhere; `main --data PREPARED_DIR` then skips prepare."""
    import json

    import xarray as xr

    if not SERIES.exists():
        pytest.skip(f"real data not found at {SERIES}")
    # A smaller region of the real radar series (another tile size, divisible by the factor):
    # 8 of the 24 tiles, 48 x 36 pixels from 4 x 3 blocks, every hour.
    with xr.open_dataset(SERIES) as full:
        tiles = sorted(set(zip(full.tile_row0.values.tolist(), full.tile_col0.values.tolist())))[:8]
        keep = [i for i, t in enumerate(zip(full.tile_row0.values.tolist(),
                                            full.tile_col0.values.tolist())) if t in tiles]
        small = full[["precip", "predictors"]].isel(time=keep, y=slice(0, 48), x=slice(0, 36),
                                                     y_lr=slice(0, 4), x_lr=slice(0, 3))
        small.load().to_netcdf(tmp_path / "radar.nc")
    root, reports = tmp_path / "pipe", tmp_path / "reports"
    args = ["main", "--profile", "tiny", "--output_root", str(root), "--report_dir", str(reports),
            "--data", str(tmp_path / "radar.nc"), "--target", "precip", "--predictor_vars",
            "predictors", "--channel_dim", "channel", "--skip_augmentation",
            "--branches", "sequential"]
    out = run_cli(*args, timeout=1200).stdout
    assert "no oracle" in out and "wall time per step: prepare" in out
    assert "in parallel" not in out and not (root / "logs").exists()
    rep = reports / "evaluate-tiny-radar"
    ev = json.loads((rep / "evaluation.json").read_text())
    assert ev["header"]["units"] == "mm/h"
    assert ev["header"]["split"].endswith(" samples)")  # hourly tiles are samples, not days
    assert "oracle_CRPS" not in ev["metrics"] and "gen_CRPS" in ev["metrics"]
    with xr.open_dataset(rep / "ensemble.nc") as nc:
        assert nc["truth"].attrs["units"] == "mm h-1"
        assert str(nc["time"].values[0]).startswith("2016-09-2")  # the file's own times
    client = MlflowClient(fresh_server)
    exp = client.get_experiment_by_name("precipgen")
    (prep,) = client.search_runs([exp.experiment_id], "tags.`precipgen.entry_point` = 'prepare'")
    assert prep.data.tags["precipgen.source"] == "netcdf"

    again = run_cli("main", "--profile", "tiny", "--output_root", str(tmp_path / "pipe2"),
                    "--report_dir", str(reports), "--data", str(root / "prepared"),
                    "--skip_augmentation", timeout=1200).stdout
    assert "prepare: skipped" in again and "5 steps" in again


def test_main_data_source_detection(tmp_path: Path):
    import argparse

    from precipgen.steps.main import data_source, prepare_source_args

    def ns(**kw):
        base = {"source": "auto", "data": None, "obs": None, "predictors": None, "target": None,
                "predictor_vars": []}
        return argparse.Namespace(**{**base, **kw})

    assert data_source(ns()) == "synthetic"
    nc = tmp_path / "a.nc"
    nc.write_bytes(b"")
    assert data_source(ns(data=str(nc))) == "netcdf"
    with pytest.raises(ValueError, match="--target VAR"):
        prepare_source_args(ns(data=str(nc)), "netcdf")
    argv = prepare_source_args(ns(data=str(nc), target="precip", predictor_vars=["a b"]), "netcdf")
    assert argv[:4] == ["--source", "netcdf", "--input", str(nc)]
    assert argv[-3:] == ["--predictor_vars", "a", "b"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a prepared dataset"):
        data_source(ns(data=str(tmp_path / "empty")))
    with pytest.raises(FileNotFoundError, match="not found"):
        data_source(ns(data=str(tmp_path / "nope")))
    assert data_source(ns(obs="o.npy")) == "srdrn"


def _cmdline(proc) -> list[str]:
    """A child's command line, or [] for one that exited (a zombie) or vanished between listing
    and reading: the earlier steps (prepare) finish while we poll."""
    import psutil

    try:
        return proc.cmdline()
    except (psutil.ZombieProcess, psutil.NoSuchProcess, psutil.AccessDenied):
        return []


@pytest.mark.slow
def test_stopping_main_stops_the_running_steps(fresh_server: str, tmp_path: Path):
    """SIGTERM to main (a scheduler's cancel, `kill PID`) takes the steps' processes with it
    (both branches when they run in parallel) and marks their runs KILLED, instead of leaving
    orphans training into the output dir."""
    import os
    import signal
    import subprocess
    import time

    import psutil

    main = subprocess.Popen(
        [str(BIN / "precipgen"), "main", "--profile", "tiny", "--output_root", str(tmp_path / "p"),
         "--report_dir", str(tmp_path / "r"), "--branches", "parallel"], cwd=REPO,
        env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wanted = ("pretrain_vae", "train_cvae")
    try:
        deadline, steps = time.time() + 300, {}
        while len(steps) < 2 and time.time() < deadline and main.poll() is None:
            for k in psutil.Process(main.pid).children():
                name = next((w for w in wanted if f" {w} " in f" {' '.join(_cmdline(k))} "), None)
                if name:
                    steps[name] = k
            time.sleep(0.5)
        assert set(steps) == set(wanted), f"main started only {sorted(steps)}"
        main.send_signal(signal.SIGTERM)
        assert main.wait(timeout=60) != 0
        gone, alive = psutil.wait_procs(list(steps.values()), timeout=30)
        assert not alive, "a step kept running after main was stopped"
    finally:
        if main.poll() is None:
            main.kill()
    client = MlflowClient(fresh_server)
    exp = client.get_experiment_by_name("precipgen")
    for name in wanted:
        (run,) = client.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'")
        assert run.info.status in ("KILLED", "FAILED"), name


def test_a_failing_branch_stops_the_other_and_is_what_is_raised(tmp_path: Path):
    """When one branch fails, the other's running process is terminated (not left training for
    an hour), and the error raised is the failure, not the stop it caused."""
    import sys
    import threading
    import time

    from precipgen.steps.main import _in_parallel, _run_child

    stop, started = threading.Event(), time.perf_counter()

    def slow() -> int:
        return _run_child([sys.executable, "-c", "import time; time.sleep(120)"], {},
                          tmp_path / "slow.log", stop)

    def failing() -> None:
        time.sleep(1.0)
        raise ValueError("pretrain_vae failed")

    with pytest.raises(ValueError, match="pretrain_vae failed"):
        _in_parallel(slow, failing, stop=stop)
    assert stop.is_set() and time.perf_counter() - started < 60
    assert _in_parallel(lambda: 1, lambda: 2, stop=threading.Event()) == [1, 2]
