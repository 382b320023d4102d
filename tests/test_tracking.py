"""The tracking layer against a real mlflow server and a sqlite store (no mocks)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port, run_cli
from mlflow.tracking import MlflowClient

from precipgen import tracking


def test_unreachable_server_fails_fast_naming_uri(monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    t0 = time.monotonic()
    with pytest.raises(tracking.TrackingError, match=uri.replace(".", r"\.")):
        with tracking.start_run("test"):
            pass
    assert time.monotonic() - t0 < 15


def test_unreachable_server_from_the_cli(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    proc = run_cli("prepare", "--days", "30", "--output", str(tmp_path / "out"),
                   env={"MLFLOW_TRACKING_URI": uri}, check=False, cwd=tmp_path)
    assert proc.returncode == 2
    assert f"cannot reach the MLflow tracking server at {uri}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert time.monotonic() - t0 < 60  # the check itself is < 15 s; the rest is imports


def test_params_flattened_batched_truncated(sqlite_tracking):
    long = "x" * (tracking.MAX_PARAM_LEN + 50)
    many = {f"p{i}": i for i in range(250)}  # > one batch of 100
    with tracking.start_run("test", params={"a": {"b": 1, "c": {"d": "e"}}, "long": long,
                                            "many": many}) as run:
        run.log_metrics({"m": 1.5, "nan": float("nan")}, step=0)
        run.log_metrics({"m": 2.5}, step=1)
    r = MlflowClient(sqlite_tracking).get_run(run.run_id)
    p = r.data.params
    assert p["a.b"] == "1" and p["a.c.d"] == "e"
    assert len(p["long"]) == tracking.MAX_PARAM_LEN and p["long"].endswith(tracking.TRUNC_MARK)
    assert len([k for k in p if k.startswith("many.")]) == 250
    assert r.data.tags["precipgen.entry_point"] == "test"
    assert r.info.status == "FINISHED"
    hist = MlflowClient(sqlite_tracking).get_metric_history(run.run_id, "m")
    assert [(m.step, m.value) for m in hist] == [(0, 1.5), (1, 2.5)]  # async logging flushed
    assert "nan" not in r.data.metrics


def test_failed_step_marks_run_failed(sqlite_tracking):
    with pytest.raises(ValueError), tracking.start_run("test") as run:
        raise ValueError("boom")
    assert MlflowClient(sqlite_tracking).get_run(run.run_id).info.status == "FAILED"


def test_resolve_local_and_runs_uri_against_server(tracking_server, tmp_path):
    out = tmp_path / "produced"
    out.mkdir()
    (out / "thing.json").write_text('{"a": 1}')
    arr = np.arange(6, dtype=np.float32)
    np.save(out / "arr.npy", arr)
    with tracking.start_run("test") as run:
        run.log_artifacts(out, "stuff")
        run.log_dataset(out, "abc123", name="ds")
        tracking.mark_output(out, run.run_id)
    local = tracking.resolve(str(out))
    assert local.path == out and local.run_id == run.run_id
    remote = tracking.resolve(f"runs:/{run.run_id}/stuff", dst=tmp_path / "dl")
    assert remote.run_id == run.run_id
    np.testing.assert_array_equal(np.load(Path(remote.path) / "arr.npy"), arr)
    (inp,) = MlflowClient(tracking_server).get_run(run.run_id).inputs.dataset_inputs
    assert inp.dataset.digest == "abc123" and inp.dataset.name == "ds"
    with pytest.raises(FileNotFoundError, match="input not found"):
        tracking.resolve(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no registered model for models:/nope@best"):
        tracking.resolve("models:/nope@best")
    assert run.url.startswith(tracking_server) and run.run_id in run.url


def test_resumed_run_warns_when_a_param_changed(sqlite_tracking: str, capsys) -> None:
    with tracking.start_run("prepare", params={"train": {"epochs": 2}}) as run:
        rid = run.run_id
    with tracking.start_run("prepare", params={"train": {"epochs": 4, "lr": 0.1}}, run_id=rid):
        pass
    err = capsys.readouterr().err
    assert "keeps its original values of train.epochs" in err
    params = tracking.get_run(rid).data.params
    assert params["train.epochs"] == "2" and params["train.lr"] == "0.1"


def test_nested_run_under_mlflow_run_id_is_a_new_child(sqlite_tracking, monkeypatch):
    """Under `mlflow run` (MLFLOW_RUN_ID set), a nested run must not re-open the parent."""
    client = MlflowClient()
    exp = client.get_experiment_by_name("precipgen") or client.get_experiment(
        client.create_experiment("precipgen"))
    parent_id = client.create_run(exp.experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", parent_id)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", exp.experiment_id)
    with tracking.start_run("evaluate") as parent:
        assert parent.run_id == parent_id
        with tracking.start_run("augmentation_real", nested=True) as child:
            assert child.run_id != parent_id
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])}
    assert runs[parent_id].data.tags["precipgen.entry_point"] == "evaluate"
    assert runs[child.run_id].data.tags["mlflow.parentRunId"] == parent_id
    assert runs[child.run_id].data.tags["precipgen.entry_point"] == "augmentation_real"


def test_promote_sets_champion_on_the_versions_of_that_run_only(sqlite_tracking):
    """evaluate's `champion`: the versions the passing run registered, not a later candidate."""
    client = MlflowClient(sqlite_tracking)
    exp = client.create_experiment("promote")
    good, later = (client.create_run(exp).info.run_id for _ in range(2))
    client.create_registered_model("vae3d-crps")
    v1 = client.create_model_version("vae3d-crps", f"runs:/{good}/model", run_id=good)
    v2 = client.create_model_version("vae3d-crps", f"runs:/{later}/model", run_id=later)
    client.set_registered_model_alias("vae3d-crps", "candidate", v2.version)
    assert tracking.promote(good, "champion") == [f"vae3d-crps v{v1.version}"]
    assert client.get_model_version_by_alias("vae3d-crps", "champion").version == v1.version
    assert client.get_model_version_by_alias("vae3d-crps", "candidate").version == v2.version
    assert tracking.promote(client.create_run(exp).info.run_id) == []  # registered nothing
