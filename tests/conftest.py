"""Shared fixtures: a real MLflow tracking server, isolated stores, small prepared datasets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MRMS = SHARED / "data" / "mrms-hourly" / "mrms_hourly.nc"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``mlflow server`` (own process group; the whole group is killed at teardown)."""
    root = tmp_path_factory.mktemp("mlserver")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"),
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise RuntimeError("mlflow server did not start within 120 s")
    yield url
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    log.close()


@pytest.fixture
def tracking_server(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point this test's steps (in-process and subprocesses) at the real server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    _reset_mlflow(mlflow_server)
    return mlflow_server


@pytest.fixture
def sqlite_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An isolated sqlite store (the default kind of store, in a temp dir)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # sqlite stores put artifacts under ./mlruns
    _reset_mlflow(uri)
    return uri


def _reset_mlflow(uri: str) -> None:
    """No run left open by an earlier test, and mlflow's global URI (which wins over the
    environment once set) pointing at this test's store."""
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(uri)
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        os.environ.pop(var, None)


def run_cli(*args: str, env: dict[str, str] | None = None, check: bool = True,
            cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``precipgen`` as a user would (a subprocess), returning its output."""
    proc = subprocess.run(
        [str(BIN / "precipgen"), *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})}, cwd=cwd or REPO, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"precipgen {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def mrms_path() -> Path:
    if not MRMS.exists():
        pytest.skip(f"real data not found at {MRMS}")
    return MRMS
