"""``precipgen main``: the whole pipeline, prepare -> pretrain_vae -> finetune_crps -> train_cvae -> sample -> evaluate.

Each step runs as its own process inside a child run of one parent run (the process picks the
child up through ``MLFLOW_RUN_ID``), so a step's memory is returned when it ends and a failure
names the step. A step is reused, as in MLflow's multistep workflow example, when a FINISHED run
with the same step key exists: the key hashes the step's arguments (which name the upstream run
ids), the code version and the profile, so changing anything upstream re-runs what follows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from precipgen import __version__, tracking
from precipgen.config import split_overrides
from precipgen.locks import claim_output

PROFILES: dict[str, dict[str, object]] = {
    # Small grid, few epochs: the whole pipeline in minutes on 2 CPU cores.
    "quick": {"config": "configs/quick.yaml", "days": 730, "height": 72, "width": 60,
              "factor": 12, "num_samples": 8, "max_days": 0},
    # The science profile (issues 13, 14): every split >= 20 heavy days, early stopping, 16 members.
    "standard": {"config": "configs/standard.yaml", "days": 2400, "height": 72, "width": 60,
                 "factor": 12, "num_samples": 16, "max_days": 0},
    # Plumbing smoke test (the test suite): seconds per step, models learn little.
    "tiny": {"config": "configs/tiny.yaml", "days": 160, "height": 24, "width": 24,
             "factor": 4, "num_samples": 4, "max_days": 0},
    # The seed's sizes: 156 x 132 from 13 x 11, full configs (hours on a CPU; use a GPU).
    "full": {"config": "configs/default.yaml", "days": 3000, "height": 156, "width": 132,
             "factor": 12, "num_samples": 10, "max_days": 0},
}
STEP_KEY_TAG = "precipgen.step_key"

# prepare's source flags that main passes through (same names, same meaning).
DATA_FLAGS: dict[str, dict[str, Any]] = {
    "target": {"default": None, "help": "netcdf: the precipitation variable"},
    "predictor_vars": {"nargs": "+", "default": [], "metavar": "VAR",
                       "help": "netcdf: predictor variables"},
    "channel_dim": {"default": None, "help": "netcdf: the channel dim of 4-D predictors"},
    "time_dim": {"default": None, "help": "netcdf: time dim (default time)"},
    "group_coords": {"default": None, "help": "netcdf: per-sample location coordinates"},
    "predictors": {"default": None, "help": "srdrn: (N, h, w, C) .npy"},
    "obs": {"default": None, "help": "srdrn: (N, H, W) .npy, NaN at sea"},
    "predictors_test": {"default": None}, "obs_test": {"default": None},
    "land_mask": {"default": None}, "mean": {"default": None}, "std": {"default": None},
    "channel_names": {"default": None},
    "units": {"default": None, "help": "precipitation units (default: from the file)"},
    "pixel_km": {"default": None},
    "allow_implausible": {"nargs": "?", "const": "true", "default": None},
}


def _flag(v: Any) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "y")


def is_prepared_dir(path: Path) -> bool:
    return (path / "metadata" / "split.json").is_file() and (path / "Y_hr.npy").is_file()


def data_source(args: argparse.Namespace) -> str:
    """synthetic | prepared | netcdf | srdrn, from --source or what --data / --obs are."""
    if args.source != "auto":
        return args.source
    if getattr(args, "obs", None):
        return "srdrn"
    if not args.data:
        return "synthetic"
    path = Path(args.data)
    if not path.exists():
        raise FileNotFoundError(f"--data {path}: not found")
    if path.is_dir() and is_prepared_dir(path):
        return "prepared"
    if path.is_dir() and not any(path.glob("*.nc")):
        raise ValueError(f"--data {path}: neither a prepared dataset (metadata/split.json) nor "
                         "a directory of .nc files")
    return "netcdf"


def prepare_source_args(args: argparse.Namespace, source: str) -> list[str]:
    """prepare's flags for the user's data (source flags passed through as given)."""
    if source == "netcdf":
        path = Path(args.data)
        files = sorted(path.glob("*.nc")) if path.is_dir() else [path]
        if not args.target or not "".join(args.predictor_vars).strip():
            raise ValueError(f"--data {path} is NetCDF: give --target VAR and "
                             "--predictor_vars VAR... (see `precipgen prepare --help`)")
        out = ["--source", "netcdf", "--input", *map(str, files)]
    else:
        if not args.obs or not args.predictors:
            raise ValueError("SRDRN arrays need --predictors FILE and --obs FILE")
        out = ["--source", "srdrn"]
    for flag in DATA_FLAGS:
        value = getattr(args, flag, None)
        if isinstance(value, list):  # MLproject passes one space-separated string
            value = [v for item in value for v in str(item).split()]
        if value in (None, [], ""):
            continue
        out += [f"--{flag}", *map(str, value)] if isinstance(value, list) else [f"--{flag}", str(value)]
    return out


@dataclass
class Step:
    name: str
    argv: list[str]
    run_id: str | None = None
    reused: bool = False
    seconds: float = 0.0  # wall time (0 when reused)
    outputs: list[Path] = field(default_factory=list)  # local outputs that must still exist


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--output_root", default=None,
                   help="where local outputs go (default outputs/pipeline-<profile>)")
    p.add_argument("--report_dir", default="reports",
                   help="evaluation reports go to <report_dir>/evaluate-<profile>/")
    p.add_argument("--seed", type=lambda v: int(float(v or 0)), default=0,
                   help="data generator seed")
    p.add_argument("--force", action="store_true", help="re-run every step, reusing nothing")
    p.add_argument("--skip_augmentation", nargs="?", const=True, default=False, type=_flag,
                   help="evaluate without the SRDRN augmentation experiment")
    g = p.add_argument_group("your own data (default: the built-in synthetic generator)")
    g.add_argument("--data", default=None, metavar="FILE_OR_DIR",
                   help="a NetCDF file or a directory of them, or a prepared dataset dir")
    g.add_argument("--source", choices=("auto", "netcdf", "srdrn", "prepared"), default="auto",
                   help="auto: a prepared dir as is, .nc files as netcdf, --obs as srdrn")
    for flag, kw in DATA_FLAGS.items():
        g.add_argument(f"--{flag}", **kw)


def _step_key(step: Step, profile: str) -> str:
    git = tracking.git_info()  # uncommitted code is another code version: never reused as clean
    payload = {"step": step.name, "argv": step.argv, "profile": profile, "version": __version__,
               "git": git.get("git_commit", ""), "dirty": git.get("git_dirty", "")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _common(args: argparse.Namespace, profile: dict[str, object]) -> list[str]:
    """Config flags every step gets: the profile's config (unless the user gave one) + overrides."""
    common = ["--config", str(args.config or profile["config"])]
    for item in [*split_overrides(args.overrides), *args.set]:
        common += ["--set", item]
    return common


def _run_child(argv: list[str], env: dict[str, str]) -> int:
    """Run one step's process; stopping main (SIGTERM, Ctrl-C) stops the step too, so no
    orphaned step keeps training and writing after the pipeline was cancelled."""
    proc = subprocess.Popen(argv, env=env)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_step(step: Step, parent_id: str, experiment_id: str, profile: str, force: bool) -> None:
    key = _step_key(step, profile)
    if not force:
        found = tracking.find_finished_run_by_tag(STEP_KEY_TAG, key, experiment_id)
        if found and all(p.exists() for p in step.outputs):
            step.run_id, step.reused = found, True
            print(f"== {step.name}: reusing finished run {found} (same parameters and inputs)")
            return
    step.run_id = tracking.create_child_run(parent_id, step.name, {STEP_KEY_TAG: key})
    print(f"== {step.name}: precipgen {' '.join(step.argv)}", flush=True)
    env = {**os.environ, "MLFLOW_RUN_ID": step.run_id, "MLFLOW_EXPERIMENT_ID": experiment_id,
           "MLFLOW_TRACKING_URI": tracking.tracking_uri()}
    t0 = time.perf_counter()
    try:
        returncode = _run_child([sys.executable, "-m", "precipgen", *step.argv], env)
    except BaseException:  # main stopped (SIGTERM, Ctrl-C): the step went with it
        if tracking.run_status(step.run_id) == "RUNNING":
            tracking.terminate_run(step.run_id, "KILLED")
        raise
    if tracking.run_status(step.run_id) == "RUNNING":  # died before its run could end
        tracking.terminate_run(step.run_id, "FAILED" if returncode else "FINISHED")
    if returncode:
        raise RuntimeError(f"pipeline step '{step.name}' failed (exit {returncode}); "
                           f"its run: {step.run_id}")
    step.seconds = time.perf_counter() - t0
    print(f"== {step.name}: done in {step.seconds:.0f}s (run {step.run_id})")


def run(args: argparse.Namespace) -> int:
    profile = PROFILES[args.profile]
    # Everything lands where the user stands (steps run in the same working directory).
    source = data_source(args)
    name = args.profile if source == "synthetic" else \
        f"{args.profile}-{Path(args.data or args.obs).stem}"
    root = Path(args.output_root or f"outputs/pipeline-{name}").resolve()
    reports = Path(args.report_dir or "reports").resolve()
    with claim_output(root, "--output_root", inside=True) as owner:
        return _run(args, profile, root, reports, owner, source, name)


def _run(args: argparse.Namespace, profile: dict[str, object], root: Path, reports: Path,
         owner: Any, source: str, name: str) -> int:
    common = _common(args, profile)
    prepared, synth = root / "prepared", root / "synth"

    with tracking.start_run("main", params={"profile": args.profile, "source": source,
                                            "seed": args.seed, "config": common[1]},
                            run_name=f"pipeline-{name}") as parent:
        parent.set_tags({"output_root": str(root), **({"data": str(Path(args.data).resolve())}
                                                       if args.data else {})})
        owner.set_run_id(parent.run_id)
        from precipgen.tracking import get_run

        experiment_id = get_run(parent.run_id).info.experiment_id
        steps: dict[str, Step] = {}

        def go(step: Step) -> Step:
            _run_step(step, parent.run_id, experiment_id, args.profile, args.force)
            steps[step.name] = step
            parent.set_tags({f"step.{step.name}_run_id": step.run_id,
                             f"step.{step.name}_reused": step.reused})
            return step

        if source == "prepared":
            prepared = Path(args.data).resolve()
            print(f"== prepare: skipped, {prepared} is a prepared dataset")
        else:
            src = (["--source", "synthetic", "--days", str(profile["days"]),
                    "--height", str(profile["height"]), "--width", str(profile["width"]),
                    "--factor", str(profile["factor"]), "--seed", str(args.seed)]
                   if source == "synthetic" else prepare_source_args(args, source))
            go(Step("prepare", ["prepare", *common, *src, "--output", str(prepared),
                                "--overwrite"],
                    outputs=[prepared / "metadata" / "provenance.json"]))
        if source != "synthetic":
            print("== no oracle: real data has no exact p(Y | X); oracle scores are skipped")
        data = ["--data", str(prepared)]
        pre = go(Step("pretrain_vae", ["pretrain_vae", *common, *data,
                                       "--output_dir", str(root / "vae3d")]))
        gen = go(Step("finetune_crps", ["finetune_crps", *common, *data,
                                        "--pretrained", f"runs:/{pre.run_id}/model",
                                        "--output_dir", str(root / "crps")]))
        cvae = go(Step("train_cvae", ["train_cvae", *common, *data,
                                      "--output_dir", str(root / "cvae")]))
        go(Step("sample", ["sample", *common, *data, "--model", f"runs:/{cvae.run_id}/model",
                           "--output", str(synth), "--overwrite",
                           "--augment_out", str(root / "augmented")],
                outputs=[synth / "manifest.csv"]))
        evaluate = ["evaluate", *common, *data,
                    "--deterministic", f"runs:/{pre.run_id}/model",
                    "--generative", f"runs:/{gen.run_id}/model",
                    "--cvae", f"runs:/{cvae.run_id}/model",
                    "--num_samples", str(profile["num_samples"]),
                    "--run_name", f"evaluate-{name}", "--report_dir", str(reports)]
        if profile["max_days"]:
            evaluate += ["--max_days", str(profile["max_days"])]
        if not args.skip_augmentation:
            evaluate += ["--augmentation", "--samples", str(synth)]
        go(Step("evaluate", evaluate))
        reused = [s.name for s in steps.values() if s.reused]
        parent.log_metrics({f"wall_s_{s.name}": s.seconds for s in steps.values()})
        print("main: wall time per step: " + ", ".join(
            f"{s.name} {'reused' if s.reused else f'{s.seconds:.0f}s'}" for s in steps.values())
            + f" (total {sum(s.seconds for s in steps.values()) / 60:.1f} min)")
        print(f"main: {len(steps)} steps ({len(reused)} reused{': ' + ', '.join(reused) if reused else ''})"
              f"; outputs under {root}, report {reports / f'evaluate-{name}' / 'report.html'} "
              f"| run {parent.url}")
    return 0
