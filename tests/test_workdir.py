"""Outputs go where the user stands (or PRECIPGEN_HOME), never into the checkout or next to the
installed package; the viewers never install; the server can require authentication."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, free_port, kill_group, run_cli, wait_for_health
from mlflow.tracking import MlflowClient

OUTPUT_NAMES = ("mlflow.db", "mlruns", "outputs", "optuna.db", "data", "reports",
                "experiments_generative_crps", "mlflow.db.lock")
TINY = ["--set", "model.d_z=4", "--set", "model.base_filters=4", "--set", "model.d_x=8",
        "--set", "model.d_y=8", "--set", "train.batch_size=4", "--set", "train.epochs=1",
        "--set", "train.max_batches_per_epoch=2", "--set", "train.val_samples=2",
        "--set", "train.figure_interval=0"]
PREPARE = ["prepare", "--source", "synthetic", "--days", "48", "--height", "24", "--width", "24",
           "--factor", "4"]


def snapshot(root: Path) -> dict[str, tuple[int, ...]]:
    """What the default outputs of a run would change in ``root``."""
    out = {}
    for name in OUTPUT_NAMES:
        p = root / name
        files = [p] if p.is_file() else sorted(p.rglob("*")) if p.is_dir() else []
        out[name] = tuple(f.stat().st_mtime_ns for f in files if f.is_file())
    return out


@pytest.mark.slow
def test_steps_write_where_the_user_stands(tmp_path):
    before = snapshot(REPO)
    here = tmp_path / "work"
    here.mkdir()
    for argv in (PREPARE, ["train_cvae", *TINY]):  # the defaults: data/prepared, outputs/cvae
        run_cli(*argv, cwd=here, unset=("MLFLOW_TRACKING_URI", "PRECIPGEN_HOME"))
    assert (here / "data" / "prepared" / "Y_hr.npy").exists()
    assert (here / "outputs" / "cvae" / "checkpoints" / "cvae_best.pt").exists()
    client = MlflowClient(f"sqlite:///{here / 'mlflow.db'}")
    exp = client.get_experiment_by_name("precipgen")
    assert exp.artifact_location == (here / "mlruns").as_uri()
    for run in client.search_runs([exp.experiment_id]):
        assert run.info.artifact_uri.startswith((here / "mlruns").as_uri())
    assert any((here / "mlruns").rglob("cvae_best.pt"))
    assert snapshot(REPO) == before, "a step wrote into the checkout"


def test_precipgen_home_is_where_everything_goes(tmp_path):
    start, home = tmp_path / "start", tmp_path / "home"
    start.mkdir()
    run_cli(*PREPARE, cwd=start, env={"PRECIPGEN_HOME": str(home)},
            unset=("MLFLOW_TRACKING_URI",))
    assert (home / "data" / "prepared" / "Y_hr.npy").exists() and (home / "mlflow.db").exists()
    assert (home / "mlruns").is_dir()
    assert not any(start.iterdir()), "PRECIPGEN_HOME set, yet the working directory got files"


def test_profiles_are_found_from_any_directory(tmp_path):
    from precipgen.config import config_path, load_config

    os.chdir(tmp_path)
    try:
        assert load_config("quick").train.epochs == load_config("configs/quick.yaml").train.epochs
    finally:
        os.chdir(REPO)
    assert config_path("tiny").parent.name == "configs"


# ------------------------------------------------------------------ viewers
def make(*args: str, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(["make", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                          **kw)


@pytest.mark.parametrize("target", ["ui", "server", "dashboard"])
def test_viewers_never_install_and_honour_port(target):
    dry = make("-n", target, "PORT=5999")
    assert dry.returncode == 0, dry.stderr
    assert "pip" not in dry.stdout and "--port 5999" in dry.stdout


@pytest.mark.parametrize("target", ["ui", "server", "dashboard"])
def test_viewers_say_how_to_install_when_the_venv_is_missing(target, tmp_path):
    proc = make(target, f"VENV={tmp_path / 'no-venv'}")
    assert proc.returncode != 0 and "run 'make install' first" in proc.stderr


def test_reports_dir_is_documented():
    assert "report.html" in (REPO / "reports" / "README.md").read_text()


# ------------------------------------------------------------------ authentication
def _post(url: str, body: dict, auth: tuple[str, str] | None = None) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.slow
def test_auth_server_refuses_unauthenticated_writes(tmp_path):
    port, password = free_port(), "precipgen-test-admin-pw"
    env = {**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": password,
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        ["make", "-s", "server", "AUTH=1", f"PORT={port}", f"MLSERVER_DIR={tmp_path}",
         f"VENV={Path(sys.executable).parent.parent}"],
        cwd=REPO, env=env, start_new_session=True, stdout=open(tmp_path / "make.log", "w"),
        stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, proc, tmp_path / "make.log")
        create = f"{url}/api/2.0/mlflow/experiments/create"
        assert _post(create, {"name": "anonymous"}) == 401
        assert _post(create, {"name": "admin-made"}, ("admin", password)) == 200
        proc_cli = run_cli(*PREPARE, "--output", str(tmp_path / "p"), check=False, cwd=tmp_path,
                           env={"MLFLOW_TRACKING_URI": url})
        assert proc_cli.returncode == 2 and not (tmp_path / "p").exists()
        assert "requires authentication" in proc_cli.stderr, proc_cli.stderr
        assert "Traceback" not in proc_cli.stderr
    finally:
        kill_group(proc)
