"""What pruning saves, and how `precipgen tune` scales with worker processes.

    .venv/bin/python bench/bench_tune.py [--trials 12] [--epochs 8] [--pruners median,hyperband,none]
                                         [--postgres postgresql://postgres@127.0.0.1:5432/test]

1. A ``--trials``-trial cvae sweep (tiny data and model, ``--epochs`` epochs per trial, same
   sampler seed) with each pruner: trial-epochs run, trials pruned, best val_MAE_tail, wall.
2. Trials per hour on PostgreSQL with 1 worker process (8 trials, 2 torch threads) and 2
   worker processes sharing one study (4 trials each, 1 thread each: the same 2 cores).

Every sweep is the real command (``precipgen tune`` subprocesses: import, study load, MLflow
nested runs against a real ``mlflow server``), so per-process start-up counts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))  # make_prepared: a random prepared dataset

import optuna  # noqa: E402
from helpers import make_prepared  # noqa: E402

from precipgen.tuning.study import normalize_storage  # noqa: E402


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers",
         "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("mlflow server did not start")


def tune_cmd(data: Path, out: Path, name: str, storage: str, n: int, epochs: int,
             pruner: str, seed: int) -> list[str]:
    sets = [f"data.path={data}", "model.d_z=8", "model.base_filters=8", "model.d_x=16",
            "model.d_y=32", "train.batch_size=4", "train.max_batches_per_epoch=8",
            "train.val_samples=2", "loss.warmup_epochs=1", f"train.epochs={epochs}",
            "train.lr=2e-3", "train.early_stopping_patience=0", f"train.output_dir={out}"]
    return [str(BIN / "precipgen"), "tune", "--study", "cvae", "--n_trials", str(n),
            "--study_name", name, "--storage", storage, "--pruner", pruner, "--seed", str(seed),
            *[a for s in sets for a in ("--set", s)]]


def run_workers(cmds: list[list[str]], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, cwd=REPO) for c in cmds]
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t0
    for p, o in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"tune worker failed ({p.returncode}):\n{o[-3000:]}")
    return wall


def summarize(storage: str, name: str) -> dict[str, float]:
    study = optuna.load_study(study_name=name, storage=normalize_storage(storage))
    trials = study.trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    return {
        "trials": len(trials),
        "complete": len(done),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "fail": sum(t.state.name == "FAIL" for t in trials),
        "trial_epochs": sum(int(t.user_attrs.get("epochs_run", 0)) for t in trials),
        "best": min((t.value for t in done), default=float("nan")),
    }


def postgres_ok(url: str) -> bool:
    try:
        import psycopg2

        psycopg2.connect(url, connect_timeout=3).close()
        return True
    except Exception as e:  # report and skip the scaling part
        print(f"PostgreSQL at {url} unreachable ({e}); skipping the worker-scaling part")
        return False


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--pruners", default="median,hyperband,none")
    p.add_argument("--scale_trials", type=int, default=8, help="trials in the scaling runs")
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_tune-"))
    server, url = start_server(tmp / "mlserver")
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "OMP_NUM_THREADS": "2"}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(var, None)
    data = make_prepared(tmp)
    try:
        print(f"== pruning: {args.trials}-trial cvae sweep, <= {args.epochs} epochs per trial "
              f"(tiny data 64 days 24x24, 8 batches/epoch), TPE seed 0")
        print(f"{'pruner':10s} {'trial-epochs':>12s} {'saved':>7s} {'pruned':>6s} "
              f"{'best val_MAE_tail':>18s} {'wall s':>7s}")
        rows = {}
        for pruner in args.pruners.split(","):
            storage, name = f"sqlite:///{tmp / f'optuna_{pruner}.db'}", f"bench-{pruner}"
            cmd = tune_cmd(data, tmp / "out", name, storage, args.trials, args.epochs, pruner, 0)
            wall = run_workers([cmd], env)
            rows[pruner] = {**summarize(storage, name), "wall": wall}
        full = args.trials * args.epochs
        for pruner, r in rows.items():
            saved = 1 - r["trial_epochs"] / full
            print(f"{pruner:10s} {r['trial_epochs']:12d} {saved:7.0%} {r['pruned']:6d} "
                  f"{r['best']:18.4f} {r['wall']:7.1f}")

        if postgres_ok(args.postgres):
            n = args.scale_trials
            print(f"\n== scaling on PostgreSQL: {n} trials x {args.epochs} epochs, no pruning, "
                  f"2 CPU cores in all")
            for workers in (1, 2):
                name = f"bench-scale-{workers}-{uuid.uuid4().hex[:8]}"
                threads = str(max(1, 2 // workers))
                cmds = [tune_cmd(data, tmp / "out", name, args.postgres, n // workers,
                                 args.epochs, "none", seed) for seed in range(workers)]
                try:
                    wall = run_workers(cmds, {**env, "OMP_NUM_THREADS": threads})
                    r = summarize(args.postgres, name)
                    numbers = [t.number for t in optuna.load_study(
                        study_name=name, storage=normalize_storage(args.postgres)).trials]
                    assert sorted(numbers) == list(range(n)), numbers
                    print(f"{workers} worker(s) x {threads} thread(s): {r['trials']} trials in "
                          f"{wall:.1f}s = {3600 * r['trials'] / wall:.0f} trials/hour "
                          f"(best {r['best']:.4f}; trial numbers unique)")
                finally:
                    optuna.delete_study(study_name=name,
                                        storage=normalize_storage(args.postgres))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
