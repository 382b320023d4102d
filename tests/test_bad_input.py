"""Bad input a user can fall into: each is refused with exit 2 and a message naming the file,
key or value and what is expected, with nothing written (no output, no MLflow run, no study)."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from helpers import make_prepared
from mlflow.tracking import MlflowClient
from test_validate import srdrn_arrays, write

from precipgen.models.checkpoint import load_checkpoint


@pytest.fixture
def store(tmp_path: Path) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}


def refused(tmp: Path, env: dict[str, str], *args: str) -> str:
    proc = run_cli(*args, env=env, check=False, cwd=tmp)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp / "prepared").exists()
    db = tmp / "mlflow.db"
    if db.exists():  # a refusal before the run starts leaves no run behind
        exp = MlflowClient(f"sqlite:///{db}").get_experiment_by_name("precipgen")
        assert exp is None or not MlflowClient(f"sqlite:///{db}").search_runs([exp.experiment_id])
    return proc.stderr


def prepare_srdrn(tmp: Path, env: dict[str, str], x: Path, y: Path, *extra: str) -> str:
    return refused(tmp, env, "prepare", "--source", "srdrn", "--predictors", str(x), "--obs",
                   str(y), "--output", str(tmp / "prepared"), *extra)


def test_empty_npy(tmp_path, store):
    x, y = srdrn_arrays()
    p = write(tmp_path, x=x)
    empty = tmp_path / "obs.npy"
    empty.write_bytes(b"")
    err = prepare_srdrn(tmp_path, store, p["x"], empty)
    assert f"obs file {empty} is empty (0 bytes)" in err and ".npy" in err


def test_text_file_named_npy(tmp_path, store):
    x, _ = srdrn_arrays()
    p = write(tmp_path, x=x)
    text = tmp_path / "obs.npy"
    text.write_text("day,precip\n0,1.5\n")
    err = prepare_srdrn(tmp_path, store, p["x"], text)
    assert f"obs file {text} is not a NumPy .npy/.npz file" in err
    assert "allow_pickle" not in err


def test_truncated_npy(tmp_path, store):
    x, y = srdrn_arrays()
    p = write(tmp_path, x=x, y=y)
    p["y"].write_bytes(p["y"].read_bytes()[:200])
    err = prepare_srdrn(tmp_path, store, p["x"], p["y"])
    assert f"obs file {p['y']}" in err and ("truncated" in err or "not a readable" in err)


def test_implausible_precip_is_refused_unless_allowed(tmp_path, store):
    x, y = srdrn_arrays()
    y[3, 5, 5] = 1e6
    p = write(tmp_path, x=x, y=y)
    err = prepare_srdrn(tmp_path, store, p["x"], p["y"])
    assert "above 2000 mm/day" in err and "max 1e+06 mm/day" in err
    assert "first day indices: 3" in err and "--allow_implausible" in err
    err = prepare_srdrn(tmp_path, store, p["x"], p["y"], "--units", "mm h-1")
    assert "above 500 mm/h" in err
    run_cli("prepare", "--source", "srdrn", "--predictors", str(p["x"]), "--obs", str(p["y"]),
            "--output", str(tmp_path / "prepared"), "--allow_implausible", env=store,
            cwd=tmp_path)
    assert (tmp_path / "prepared" / "Y_hr.npy").exists()


def test_unknown_units(tmp_path, store):
    x, y = srdrn_arrays()
    p = write(tmp_path, x=x, y=y)
    err = prepare_srdrn(tmp_path, store, p["x"], p["y"], "--units", "inches")
    assert "precipitation units 'inches' are not known" in err and "mm day-1" in err


@pytest.mark.parametrize("content, expect", [
    ("- data\n- train\n", "the top level must be a mapping of sections"),
    ("train: [1, 2\n", "is not valid YAML"),
])
def test_bad_config_files(tmp_path, store, content, expect):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    err = refused(tmp_path, store, "prepare", "--config", str(cfg), "--days", "40",
                  "--output", str(tmp_path / "prepared"))
    assert f"config file {cfg}" in err and expect in err


def test_config_that_is_a_directory(tmp_path, store):
    err = refused(tmp_path, store, "train_cvae", "--config", str(tmp_path))
    assert f"config file {tmp_path} is a directory" in err


def test_nan_learning_rate_is_refused_before_any_run(tmp_path, store):
    prepared = make_prepared(tmp_path)
    err = refused(tmp_path, store, "train_cvae", "--data", str(prepared), "--set", "train.lr=nan")
    assert "config key 'train.lr': nan is not a finite number" in err
    err = refused(tmp_path, store, "train_cvae", "--data", str(prepared), "--lr", "0")
    assert "config key 'train.lr' must be > 0" in err


class _NotMlflow(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # a plain web server: no /health
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def plain_web_server() -> str:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotMlflow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_a_tracking_uri_that_is_no_mlflow_server(tmp_path, plain_web_server):
    err = refused(tmp_path, {"MLFLOW_TRACKING_URI": plain_web_server}, "prepare", "--days", "40",
                  "--height", "24", "--width", "24", "--factor", "4",
                  "--output", str(tmp_path / "prepared"))
    assert f"{plain_web_server} answers but is not an MLflow tracking server" in err


def test_tune_checks_the_tracking_server_before_creating_the_study(tmp_path, plain_web_server):
    storage = tmp_path / "optuna.db"
    err = refused(tmp_path, {"MLFLOW_TRACKING_URI": plain_web_server}, "tune", "--n_trials", "1",
                  "--storage", f"sqlite:///{storage}")
    assert "not an MLflow tracking server" in err
    assert not storage.exists(), "the study was created before the tracking server was checked"


def test_unsafe_checkpoint_is_refused_without_torchs_advice(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"kind": "cvae", "payload": np.dtype("float32")}, path)  # not weights-only
    with pytest.raises(ValueError) as e:
        load_checkpoint(path)
    text = str(e.value)
    assert f"checkpoint {path} is refused" in text and "weights_only=True" in text
    assert "weights_only=False" not in text and "trust" in text
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_checkpoint(empty)


def test_unsafe_checkpoint_from_the_cli(tmp_path, store):
    prepared = make_prepared(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"kind": "cvae", "payload": np.dtype("float32")}, path)
    err = refused(tmp_path, store, "sample", "--model", str(path), "--data", str(prepared),
                  "--output", str(tmp_path / "synth"))
    assert "is refused" in err and "weights_only=False" not in err
    assert not (tmp_path / "synth").exists()
