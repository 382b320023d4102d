"""``precipgen main``: the whole pipeline, prepare -> pretrain_vae -> finetune_crps -> train_cvae -> sample -> evaluate.

Each step runs as its own process inside a child run of one parent run (the process picks the
child up through ``MLFLOW_RUN_ID``), so a step's memory is returned when it ends and a failure
names the step. The two model branches do not depend on each other (pretrain_vae -> finetune_crps
and train_cvae -> sample); with ``--branches parallel`` (``auto``: standard and full profiles,
>= 2 CPUs) they run at the same time, each on half the CPU threads and with its console output
in ``<output_root>/logs/``:
two 1-thread processes on 2 cores do ~1.24x the work of one 2-thread process; two 2-thread
processes side by side do less than half of it (bench/results/standard_profile.md).

A step is reused, as in MLflow's multistep workflow example, when a FINISHED run with the same
step key exists: the key hashes the step's arguments (which name the upstream run
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from precipgen import __version__, tracking
from precipgen.config import split_overrides
from precipgen.locks import claim_output

PROFILES: dict[str, dict[str, object]] = {
    # Small grid, few epochs: the whole pipeline in minutes on 2 CPU cores.
    "quick": {"config": "configs/quick.yaml", "days": 730, "height": 72, "width": 60,
              "factor": 12, "num_samples": 8, "max_days": 0, "parallel": False},
    # The science profile (issues 13, 14): every split >= 20 heavy days, early stopping, 16 members.
    "standard": {"config": "configs/standard.yaml", "days": 2400, "height": 72, "width": 60,
                 "factor": 12, "num_samples": 16, "max_days": 0, "parallel": True},
    # Plumbing smoke test (the test suite): seconds per step, models learn little.
    "tiny": {"config": "configs/tiny.yaml", "days": 160, "height": 24, "width": 24,
             "factor": 4, "num_samples": 4, "max_days": 0, "parallel": False},
    # The seed's sizes: 156 x 132 from 13 x 11, full configs (hours on a CPU; use a GPU).
    "full": {"config": "configs/default.yaml", "days": 3000, "height": 156, "width": 132,
             "factor": 12, "num_samples": 10, "max_days": 0, "parallel": True},
}
# "parallel": whether --branches auto runs the two model branches side by side. Only where they
# take similar times: each gets half the threads, so when one ends early the other finishes on
# half the machine (quick: cVAE branch ~1 min, 3D-VAE branch ~5 min; standard: ~25 and ~19 min).
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
    p.add_argument("--branches", choices=("auto", "parallel", "sequential"), default="auto",
                   help="run the 3D-VAE and cVAE branches at the same time, each on half the "
                        "CPU threads (auto: for the profiles whose branches take similar times, "
                        "standard and full, on >= 2 CPUs)")
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


def runs_branches_in_parallel(branches: str, profile: dict[str, object], cpus: int) -> bool:
    """--branches parallel | sequential as asked; auto: the profile says (see PROFILES), and
    there must be a CPU for each branch."""
    if branches != "auto":
        return branches == "parallel"
    return bool(profile.get("parallel")) and cpus >= 2


def _common(args: argparse.Namespace, profile: dict[str, object]) -> list[str]:
    """Config flags every step gets: the profile's config (unless the user gave one) + overrides."""
    common = ["--config", str(args.config or profile["config"])]
    for item in [*split_overrides(args.overrides), *args.set]:
        common += ["--set", item]
    return common


class BranchStopped(RuntimeError):
    """A step stopped because the other branch failed."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM (a scheduler's cancel, `kill PID`) unwinds like Ctrl-C, so running steps are
    stopped and their runs marked, instead of leaving orphans that keep writing."""
    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_child(argv: list[str], env: dict[str, str], log: Path | None = None,
               stop: threading.Event | None = None) -> int:
    """Run one step's process; stopping main (SIGTERM, Ctrl-C) or ``stop`` stops the step too,
    so no orphaned step keeps training and writing after the pipeline was cancelled."""
    out = open(log, "w") if log else None  # noqa: SIM115 (closed below, after the process)
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
    try:
        with _sigterm_raises():
            while True:
                try:
                    return proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    if stop is not None and stop.is_set():
                        raise BranchStopped("stopped: the other branch failed") from None
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        if out is not None:
            out.close()


def _summary_line(log: Path, name: str) -> str:
    """The step's summary line ("<step>: ..." or "<step> done: ..."), else the last line of its
    log (tqdm's redraws split on \\r)."""
    text = log.read_text(errors="replace").replace("\r", "\n")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return next((ln for ln in reversed(lines) if ln.startswith((f"{name}:", f"{name} done:"))),
                lines[-1] if lines else "")


def _in_parallel(*branches: Callable[[], Any], stop: threading.Event) -> list[Any]:
    """Run the branches in threads; the first failure stops the others, and is what is raised."""
    with _sigterm_raises(), ThreadPoolExecutor(len(branches)) as pool:
        futures = [pool.submit(b) for b in branches]
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when="FIRST_EXCEPTION")
                if any(f.exception() for f in done):
                    stop.set()
        except BaseException:
            stop.set()
            raise
    errors = [f.exception() for f in futures if f.exception()]
    if errors:
        raise next((e for e in errors if not isinstance(e, BranchStopped)), errors[0])
    return [f.result() for f in futures]


def _run_step(step: Step, parent_id: str, experiment_id: str, profile: str, force: bool,
              threads: int | None = None, log_dir: Path | None = None,
              stop: threading.Event | None = None) -> None:
    key = _step_key(step, profile)
    if not force:
        found = tracking.find_finished_run_by_tag(STEP_KEY_TAG, key, experiment_id)
        if found and all(p.exists() for p in step.outputs):
            step.run_id, step.reused = found, True
            print(f"== {step.name}: reusing finished run {found} (same parameters and inputs)")
            return
    step.run_id = tracking.create_child_run(parent_id, step.name, {STEP_KEY_TAG: key})
    log = log_dir / f"{step.name}.log" if log_dir else None
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    print(f"== {step.name}: precipgen {' '.join(step.argv)}"
          + (f" [{threads} thread(s), log {log}]" if log else ""), flush=True)
    env = {**os.environ, "MLFLOW_RUN_ID": step.run_id, "MLFLOW_EXPERIMENT_ID": experiment_id,
           "MLFLOW_TRACKING_URI": tracking.tracking_uri()}
    if threads:  # torch, OpenMP and MKL read these at start-up: no oversubscription
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    try:
        returncode = _run_child([sys.executable, "-m", "precipgen", *step.argv], env, log, stop)
    except BaseException:  # main stopped (SIGTERM, Ctrl-C): the step went with it
        if tracking.run_status(step.run_id) == "RUNNING":
            tracking.terminate_run(step.run_id, "KILLED")
        raise
    if tracking.run_status(step.run_id) == "RUNNING":  # died before its run could end
        tracking.terminate_run(step.run_id, "FAILED" if returncode else "FINISHED")
    if returncode:
        raise RuntimeError(f"pipeline step '{step.name}' failed (exit {returncode}); "
                           f"its run: {step.run_id}" + (f"; its output: {log}" if log else ""))
    step.seconds = time.perf_counter() - t0
    if log:
        print(f"   {_summary_line(log, step.name)}")
    print(f"== {step.name}: done in {step.seconds:.0f}s (run {step.run_id})", flush=True)


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
        t_start = time.perf_counter()
        cpus = os.cpu_count() or 1
        parallel = runs_branches_in_parallel(args.branches, profile, cpus)
        stop = threading.Event()

        def go(step: Step, branch: bool = False) -> Step:
            child = {"threads": max(1, cpus // 2), "log_dir": root / "logs", "stop": stop} \
                if branch and parallel else {}
            _run_step(step, parent.run_id, experiment_id, args.profile, args.force, **child)
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
        def vae3d_branch() -> tuple[Step, Step]:
            pre = go(Step("pretrain_vae", ["pretrain_vae", *common, *data,
                                           "--output_dir", str(root / "vae3d")]), branch=True)
            gen = go(Step("finetune_crps", ["finetune_crps", *common, *data,
                                            "--pretrained", f"runs:/{pre.run_id}/model",
                                            "--output_dir", str(root / "crps")]), branch=True)
            return pre, gen

        def cvae_branch() -> Step:
            cvae = go(Step("train_cvae", ["train_cvae", *common, *data,
                                          "--output_dir", str(root / "cvae")]), branch=True)
            go(Step("sample", ["sample", *common, *data, "--model", f"runs:/{cvae.run_id}/model",
                               "--output", str(synth), "--overwrite",
                               "--augment_out", str(root / "augmented")],
                    outputs=[synth / "manifest.csv"]), branch=True)
            return cvae

        if parallel:
            print(f"== the 3D-VAE and cVAE branches run in parallel, {max(1, cpus // 2)} "
                  f"thread(s) each (--branches sequential to run them one after the other)")
            (pre, gen), cvae = _in_parallel(vae3d_branch, cvae_branch, stop=stop)
        else:
            (pre, gen), cvae = vae3d_branch(), cvae_branch()
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
        wall = time.perf_counter() - t_start
        parent.log_metrics({**{f"wall_s_{s.name}": s.seconds for s in steps.values()},
                            "wall_s_total": wall})
        order = [n for n in ("prepare", "pretrain_vae", "finetune_crps", "train_cvae", "sample",
                             "evaluate") if n in steps]
        print("main: wall time per step: " + ", ".join(
            f"{n} {'reused' if steps[n].reused else f'{steps[n].seconds:.0f}s'}" for n in order)
            + f" (total {wall / 60:.1f} min"
            + (", the two model branches in parallel)" if parallel else ")"))
        print(f"main: {len(steps)} steps ({len(reused)} reused{': ' + ', '.join(reused) if reused else ''})"
              f"; outputs under {root}, report {reports / f'evaluate-{name}' / 'report.html'} "
              f"| run {parent.url}")
    return 0
