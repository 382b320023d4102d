"""README "Serving": `mlflow models serve` on a registered model answers the README's request
batch-first, and refuses a misspelled param."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, free_port, kill_group
from helpers import make_prepared

from precipgen.cli import main

TINY = ["--epochs", "1", "--batch_size", "4", "--set", "model.d_z=4", "--set",
        "model.base_filters=4", "--set", "model.d_x=8", "--set", "model.d_y=8", "--set",
        "train.max_batches_per_epoch=2", "--set", "train.val_samples=2", "--set",
        "train.figure_interval=0"]


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.mark.slow
def test_mlflow_models_serve_answers_the_readme_request(sqlite_tracking: str, tmp_path: Path):
    data = make_prepared(tmp_path / "data")
    assert main(["train_cvae", "--data", str(data), "--output_dir", str(tmp_path / "o"), *TINY]) == 0
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": sqlite_tracking,  # as after `source .venv/bin/activate`
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", "models:/cvae@candidate",
                             "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(url + "/ping", timeout=2):
                    break
            except OSError:
                assert time.time() < deadline, "server did not start"
                time.sleep(1)
        x = np.load(data / "X_lr.npy")[:3].astype(np.float64)  # float64: JSON's numbers
        code, out = _post(url + "/invocations", {"inputs": x.tolist(),
                                                 "params": {"num_samples": 2, "seed": 1}})
        assert code == 200, out
        y = np.asarray(out["predictions"])
        assert y.shape == (3, 2, 1, *np.load(data / "Y_hr.npy").shape[-2:])
        code, out = _post(url + "/invocations", {"inputs": x.tolist(),
                                                 "params": {"num_sample": 2}})
        assert code >= 400 and "num_sample" in json.dumps(out)
    finally:
        kill_group(proc)
        log.close()
