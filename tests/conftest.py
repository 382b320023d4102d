"""Shared fixtures: a real MLflow tracking server, isolated stores, small prepared datasets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
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


@contextlib.contextmanager
def start_mlflow_server(root: Path, extra_args: Sequence[str] = (),
                        env: dict[str, str] | None = None) -> Iterator[str]:
    """A real ``mlflow server`` on a free port, with its store under ``root`` (own process
    group; the whole group is killed at the end)."""
    port = free_port()
    full_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"), *extra_args,
        ],
        stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, proc, root / "server.log")
        yield url
    finally:
        kill_group(proc)
        log.close()


def wait_for_health(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not start within {timeout:.0f} s")


def kill_group(proc: subprocess.Popen) -> None:
    """The server's whole process group: killing the CLI alone leaves uvicorn serving."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real server for the session (tests that need an empty store use fresh_server)."""
    with start_mlflow_server(tmp_path_factory.mktemp("mlserver")) as url:
        yield url


@pytest.fixture
def fresh_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new server on a new, empty store, as on a new machine."""
    root = tmp_path / "fresh-mlserver"
    root.mkdir()
    with start_mlflow_server(root) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        _reset_mlflow(url)
        yield url


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
            cwd: Path | None = None, timeout: int = 600,
            unset: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """Run ``precipgen`` as a user would (a subprocess), returning its output; ``unset``
    removes variables from the environment (e.g. MLFLOW_TRACKING_URI: the default store)."""
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    proc = subprocess.run(
        [str(BIN / "precipgen"), *args], capture_output=True, text=True,
        env=full_env, cwd=cwd or REPO, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"precipgen {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


# A worker that imports everything first, says it is ready, then waits for the shared "go"
# file: the processes of a concurrency test start their real work at the same instant.
_RELEASED_WORKER = """
import importlib, pathlib, sys, time
from precipgen import cli
cli.step_module(sys.argv[3])
import precipgen.tracking
pathlib.Path(sys.argv[1]).touch()
go = pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
sys.exit(cli.main(sys.argv[3:]))
"""


def run_released(argvs: Sequence[Sequence[str]], tmp: Path, env: dict[str, str] | None = None,
                 timeout: float = 600) -> list[tuple[int, str]]:
    """Start one ``precipgen`` process per argv, release them together once all are ready;
    returns (exit code, output) per process."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    go = tmp / "go"
    ready = [tmp / f"ready-{i}" for i in range(len(argvs))]
    logs = [tmp / f"worker-{i}.log" for i in range(len(argvs))]
    procs = [subprocess.Popen([sys.executable, "-c", _RELEASED_WORKER, str(r), str(go), *a],
                              stdout=open(log, "w"), stderr=subprocess.STDOUT, env=full_env,
                              cwd=tmp)
             for r, a, log in zip(ready, argvs, logs)]
    try:
        deadline = time.time() + 180
        while not all(r.exists() for r in ready):
            dead = [i for i, p in enumerate(procs) if p.poll() is not None]
            if dead or time.time() > deadline:
                raise AssertionError("a worker died before the release: "
                                     + "".join(logs[i].read_text()[-2000:] for i in dead))
            time.sleep(0.02)
        go.touch()
        return [(p.wait(timeout=timeout), log.read_text()) for p, log in zip(procs, logs)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.fixture(scope="session")
def mrms_path() -> Path:
    if not MRMS.exists():
        pytest.skip(f"real data not found at {MRMS}")
    return MRMS


def cf_failures(path: Path) -> list[str]:
    """High-priority failures of the IOOS compliance-checker (cf:1.10) for one NetCDF file."""
    import json as _json

    out = path.with_name(path.name + ".cc.json")
    cli = Path(sys.executable).with_name("cchecker.py")
    subprocess.run([str(cli), "--test", "cf:1.10", "-f", "json_new", "-o", str(out), str(path)],
                   capture_output=True, text=True, timeout=300)
    report = _json.loads(out.read_text())[str(path)]["cf:1.10"]
    out.unlink()
    return [f"{c['name']}: {m}" for c in report["high_priorities"] for m in c["msgs"]
            if c["value"][0] < c["value"][1]]
