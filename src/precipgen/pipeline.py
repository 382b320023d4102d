"""``precipgen main``: prepare -> pretrain_vae -> finetune_crps -> train_cvae -> sample -> evaluate.

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
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from precipgen import __version__, tracking
from precipgen.config import REPO_ROOT, split_overrides

PROFILES: dict[str, dict[str, object]] = {
    # Small grid, few epochs: the whole pipeline in minutes on 2 CPU cores.
    "quick": {"config": "configs/quick.yaml", "days": 730, "height": 72, "width": 60,
              "factor": 12, "num_samples": 8, "max_days": 0},
    # Plumbing smoke test (the test suite): seconds per step, models learn little.
    "tiny": {"config": "configs/tiny.yaml", "days": 160, "height": 24, "width": 24,
             "factor": 4, "num_samples": 4, "max_days": 0},
    # The seed's sizes: 156 x 132 from 13 x 11, full configs (hours on a CPU; use a GPU).
    "full": {"config": "configs/default.yaml", "days": 3000, "height": 156, "width": 132,
             "factor": 12, "num_samples": 10, "max_days": 0},
}
STEP_KEY_TAG = "precipgen.step_key"


@dataclass
class Step:
    name: str
    argv: list[str]
    run_id: str | None = None
    reused: bool = False
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
    p.add_argument("--skip_augmentation", action="store_true",
                   help="evaluate without the SRDRN augmentation experiment")


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
    proc = subprocess.run([sys.executable, "-m", "precipgen.cli", *step.argv], env=env,
                          cwd=REPO_ROOT)
    if tracking.run_status(step.run_id) == "RUNNING":  # died before its run could end
        tracking.terminate_run(step.run_id, "FAILED" if proc.returncode else "FINISHED")
    if proc.returncode:
        raise RuntimeError(f"pipeline step '{step.name}' failed (exit {proc.returncode}); "
                           f"its run: {step.run_id}")
    print(f"== {step.name}: done in {time.perf_counter() - t0:.0f}s (run {step.run_id})")


def run(args: argparse.Namespace) -> int:
    profile = PROFILES[args.profile]
    # Steps run in the repo root: make user paths absolute against where the user stands.
    root = Path(args.output_root or REPO_ROOT / f"outputs/pipeline-{args.profile}").resolve()
    reports = Path(args.report_dir or "reports")
    reports = (reports if reports.is_absolute() else REPO_ROOT / reports).resolve()
    common = _common(args, profile)
    prepared, synth = root / "prepared", root / "synth"

    with tracking.start_run("main", params={"profile": args.profile, "output_root": str(root),
                                            "seed": args.seed, "config": common[1]},
                            run_name=f"pipeline-{args.profile}") as parent:
        from precipgen.tracking import get_run

        experiment_id = get_run(parent.run_id).info.experiment_id
        steps: dict[str, Step] = {}

        def go(step: Step) -> Step:
            _run_step(step, parent.run_id, experiment_id, args.profile, args.force)
            steps[step.name] = step
            parent.set_tags({f"step.{step.name}_run_id": step.run_id,
                             f"step.{step.name}_reused": step.reused})
            return step

        go(Step("prepare", ["prepare", *common, "--source", "synthetic",
                            "--days", str(profile["days"]), "--height", str(profile["height"]),
                            "--width", str(profile["width"]), "--factor", str(profile["factor"]),
                            "--seed", str(args.seed), "--output", str(prepared), "--overwrite"],
                outputs=[prepared / "metadata" / "provenance.json"]))
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
                    "--run_name", f"evaluate-{args.profile}", "--report_dir", str(reports)]
        if profile["max_days"]:
            evaluate += ["--max_days", str(profile["max_days"])]
        if not args.skip_augmentation:
            evaluate += ["--augmentation", "--samples", str(synth)]
        go(Step("evaluate", evaluate))
        reused = [s.name for s in steps.values() if s.reused]
        print(f"main: {len(steps)} steps ({len(reused)} reused{': ' + ', '.join(reused) if reused else ''})"
              f"; outputs under {root}, report {reports / f'evaluate-{args.profile}' / 'report.html'} "
              f"| run {parent.url}")
    return 0
