"""Concurrency on empty stores, as on a new machine: a new PostgreSQL database, a new tracking
server, a new sqlite store, each met by several processes released at the same instant; and
one run per output directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from conftest import run_cli, run_released
from helpers import make_prepared
from mlflow.tracking import MlflowClient

from precipgen.locks import OutputBusyError, claim_output

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
WORKERS = 3


@pytest.fixture
def new_postgres_db() -> str:
    """A uniquely named, empty database (dropped afterwards): what a new machine has."""
    try:
        import psycopg2

        admin = psycopg2.connect(f"{POSTGRES}/postgres", connect_timeout=3)
    except Exception as e:
        if os.environ.get("PRECIPGEN_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL at {POSTGRES} unreachable and PRECIPGEN_REQUIRE_POSTGRES=1: {e}")
        pytest.skip(f"PostgreSQL at {POSTGRES} unreachable ({str(e).strip()[:120]}); "
                    "set PRECIPGEN_REQUIRE_POSTGRES=1 to make this a failure")
    admin.autocommit = True
    name = f"precipgen_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def tiny_train(prepared: Path, out: Path) -> list[str]:
    sets = [f"data.path={prepared}", "model.d_z=4", "model.base_filters=4", "model.d_x=8",
            "model.d_y=8", "train.batch_size=4", "train.max_batches_per_epoch=2",
            "train.val_samples=2", "loss.warmup_epochs=1", "train.epochs=1",
            f"train.output_dir={out}"]
    return [a for s in sets for a in ("--set", s)]


def runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


@pytest.mark.slow
def test_tune_workers_on_a_new_database_and_a_new_server(new_postgres_db, fresh_server,
                                                         tmp_path):
    """Optuna's schema, the study and the MLflow experiment are each created once; every
    worker's parent and trials land in the study and in experiment 'precipgen'."""
    import optuna

    from precipgen.tuning.study import normalize_storage

    prepared = make_prepared(tmp_path)
    name = f"fresh-{uuid.uuid4().hex[:8]}"
    argvs = [["tune", "--study", "cvae", "--n_trials", "2", "--study_name", name,
              "--storage", new_postgres_db, "--seed", str(w),
              *tiny_train(prepared, tmp_path / "out")] for w in range(WORKERS)]
    results = run_released(argvs, tmp_path, env={"MLFLOW_TRACKING_URI": fresh_server})
    for rc, out in results:
        assert rc == 0, out[-3000:]
    study = optuna.load_study(study_name=name, storage=normalize_storage(new_postgres_db))
    assert sorted(t.number for t in study.trials) == list(range(2 * WORKERS))
    assert study.metric_names == ["val_MAE_tail"]
    client = MlflowClient(fresh_server)
    assert not runs(client, "Default"), "a worker's runs were filed under Default"
    mine = runs(client, "precipgen")
    parents = [r for r in mine if r.data.tags["precipgen.entry_point"] == "tune"]
    children = [r for r in mine if r.data.tags["precipgen.entry_point"] == "tune_trial"]
    assert len(parents) == WORKERS and len(children) == 2 * WORKERS
    assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == {c.info.run_id for c in children}
    assert sorted(sum(c.data.tags["mlflow.parentRunId"] == p.info.run_id for c in children)
                  for p in parents) == [2] * WORKERS


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_steps_started_together_on_a_new_store(store, tmp_path, request):
    """Several steps meeting a new store at once: one creates the schema (sqlite) and the
    experiment; all runs end up in 'precipgen'."""
    uri = (f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}" if store == "sqlite"
           else request.getfixturevalue("fresh_server"))
    argvs = [["prepare", "--source", "synthetic", "--days", "40", "--height", "24", "--width",
              "24", "--factor", "4", "--seed", str(i), "--output", str(tmp_path / f"p{i}")]
             for i in range(WORKERS)]
    results = run_released(argvs, tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    for rc, out in results:
        assert rc == 0, out[-3000:]
    client = MlflowClient(uri)
    assert len(runs(client, "precipgen")) == WORKERS and not runs(client, "Default")
    exp = client.get_experiment_by_name("precipgen")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    if store == "sqlite":  # artifacts beside the store, not under whatever cwd ran first
        assert exp.artifact_location == (tmp_path / "new" / "mlruns").as_uri()


# ------------------------------------------------------------------ one run per output dir
def test_a_busy_output_dir_is_refused_naming_the_holder(tmp_path, sqlite_tracking):
    prepared = make_prepared(tmp_path)
    out = tmp_path / "cvae"
    with claim_output(out, "--output_dir", inside=True) as claim:
        claim.set_run_id("0123456789abcdef")
        proc = run_cli("train_cvae", *tiny_train(prepared, out), check=False, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"--output_dir {out} is in use by another precipgen run" in proc.stderr
    assert "MLflow run 0123456789abcdef" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
    assert not runs(MlflowClient(sqlite_tracking), "precipgen"), "a refused run left a run"
    assert not (out / "checkpoints").exists()


def test_a_killed_holder_leaves_nothing_stuck(tmp_path):
    out = tmp_path / "outdir"
    code = ("import sys, time; from precipgen.locks import claim_output\n"
            f"with claim_output({str(out)!r}):\n    print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"), claim_output(out):
            pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        with claim_output(out) as claim:  # the kernel released the killed holder's lock
            assert claim.info["pid"] == os.getpid()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_run_never_logs_a_checkpoint_another_run_wrote(tmp_path):
    from precipgen.train.cvae import finish
    from precipgen.train.loop import FitResult

    best = tmp_path / "checkpoints" / "cvae_best.pt"
    best.parent.mkdir()
    torch.save({"kind": "cvae", "run_id": "the-other-run"}, best)
    result = FitResult([], 1.0, 1, best, best, False)

    class Run:
        run_id = "this-run"

    with pytest.raises(RuntimeError, match="written by run the-other-run, not by this run"):
        finish(Run(), result, None, tmp_path, "val_MAE_tail")


def test_run_directories_of_one_second_never_collide(tmp_path):
    from precipgen.train.vae3d import run_dir

    dirs = {run_dir(str(tmp_path), "vae3d", None) for _ in range(5)}
    assert len(dirs) == 5 and all(d.is_dir() for d in dirs)
