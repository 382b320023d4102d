"""Wall time of ``precipgen main --profile standard`` per step, and its verdict (issue 13: <= 45 min
end to end on 2 CPU cores).

    .venv/bin/python bench/bench_standard_profile.py [--workdir DIR] [--profile standard]
    .venv/bin/python bench/bench_standard_profile.py --store sqlite:///DIR/mlflow.db  # a past run

Runs the real command in ``--workdir`` (default: a new temporary directory; the default
sqlite store lands there), then reads the newest ``main`` run of the store: the ``wall_s_<step>``
metrics main logs, and the evaluate run's verdict metrics. Writes ``--json`` and a markdown table
beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

BIN = Path(sys.executable).parent
STEPS = ("prepare", "pretrain_vae", "finetune_crps", "train_cvae", "sample", "evaluate")
BUDGET_S = 45 * 60


def read_main_run(store: str) -> dict[str, Any]:
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("precipgen")
    if exp is None:
        raise SystemExit(f"{store}: no 'precipgen' experiment")
    (run,) = client.search_runs([exp.experiment_id], "tags.`precipgen.entry_point` = 'main'",
                                order_by=["attributes.start_time DESC"], max_results=1) or [None]
    if run is None:
        raise SystemExit(f"{store}: no main run")
    m = run.data.metrics
    steps = {s: m[f"wall_s_{s}"] for s in STEPS if f"wall_s_{s}" in m}
    out: dict[str, Any] = {"store": store, "main_run": run.info.run_id,
                           "status": run.info.status, "steps_s": steps,
                           "total_s": sum(steps.values()), "budget_s": BUDGET_S}
    ev_id = run.data.tags.get("step.evaluate_run_id")
    if ev_id:
        ev = client.get_run(ev_id).data.metrics
        out["evaluate_metrics"] = {k: v for k, v in sorted(ev.items())
                                   if k.startswith(("target_", "verdict", "gen_", "cvae_", "aug_",
                                                    "oracle_", "det_"))}
    return out


def markdown(res: dict[str, Any]) -> str:
    rows = [f"| {s} | {v / 60:.1f} |" for s, v in res["steps_s"].items()]
    total = res["total_s"]
    verdict = "within" if total <= res["budget_s"] else "over"
    return "\n".join(["| step | minutes |", "|---|---|", *rows,
                      f"| **total** | **{total / 60:.1f}** ({verdict} the 45 min budget) |", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="standard")
    ap.add_argument("--workdir", default="")
    ap.add_argument("--store", default="", help="read this store instead of running main")
    ap.add_argument("--json", default="bench/results/standard_profile.json")
    args = ap.parse_args()
    store = args.store
    if not store:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="precipgen-standard-"))
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(BIN / "precipgen"), "main", "--profile", args.profile], cwd=work,
                       check=True)
        store = f"sqlite:///{work / 'mlflow.db'}"
    res = read_main_run(store)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
