"""Issue 13's augmentation target (item 5), swept: one ``precipgen evaluate --augmentation`` per
setting on the same prepared data and the same ``precipgen sample`` output, each setting's
heavy-day scores and verdicts appended to a book (JSON + markdown table).

    python bench/sweep_augmentation.py --data DIR --samples SYNTH_DIR \
        --label A_k1 --set augmentation.mixing=A --set augmentation.k=1 \
        [--config configs/standard.yaml] [--json bench/results/augmentation_standard.json]

evaluate also scores the registered ``@latest`` models of the tracking store (it needs them);
the sweep asks for 2 members to keep that part short, since it does not touch the augmentation
experiment. Target: heavy-day MAE_tail >= 5 %
lower with augmentation, its 95 % CI below 0, and neither MAE_all nor |P99 bias| significantly
worse ("hurts"). The book also keeps rows added with ``--from_evaluation evaluation.json`` (an
evaluate run that scored the models too, e.g. the one ``main`` ran).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from target_book import append

METRICS = ("MAE_tail", "MAE_all", "abs_P99_bias", "FSS_P99")


def summarise(ev: dict[str, Any], settings: str) -> dict[str, Any]:
    """The heavy-day (and all-day) differences, CIs, verdicts and the target's pass/fail."""
    aug = ev["augmentation"]
    m, v = aug["metrics"], aug.get("verdicts", {})
    rows: dict[str, Any] = {}
    for subset in ("heavy", "all"):
        for k in METRICS:
            p = f"aug_{subset}_diff_{k}_pct"
            rows[f"{subset}_{k}"] = {"pct": m.get(p), "ci": [m.get(f"{p}_ci_low"), m.get(f"{p}_ci_high")],
                                     "verdict": v.get(f"{subset}_{k}", "")}
    tail = rows["heavy_MAE_tail"]
    ok = bool(tail["pct"] is not None and tail["pct"] <= -5.0 and tail["verdict"] == "helps"
              and rows["heavy_MAE_all"]["verdict"] != "hurts"
              and rows["heavy_abs_P99_bias"]["verdict"] != "hurts")
    notes = [n for n in aug.get("notes", []) if n.startswith(("mixing", "synthetic", "heavy"))]
    return {"settings": settings, "rows": rows, "target_pass": ok, "notes": notes,
            "n_synthetic": aug.get("n_synthetic"), "run_id": ev.get("run_id")}


def markdown(book: dict[str, Any]) -> str:
    def cell(r: dict[str, Any]) -> str:
        if r["pct"] is None:
            return "n/a"
        lo, hi = r["ci"]
        return f"{r['pct']:+.1f} % [{lo:+.1f}, {hi:+.1f}] {r['verdict']}"

    head = ("| setting | synthetic days used | heavy MAE_tail | heavy MAE_all | heavy \\|P99 bias\\| "
            "| heavy FSS_P99 | target met |\n|---|---|---|---|---|---|---|\n")
    lines = []
    for label, r in book.items():
        used = next((n for n in r["notes"] if n.startswith("mixing")), "")
        lines.append(f"| `{label}` | {used} | " + " | ".join(
            cell(r["rows"][f"heavy_{k}"]) for k in METRICS) + f" | {'yes' if r['target_pass'] else 'no'} |")
    settings = "\n".join(f"- `{label}`: {r['settings']}" for label, r in book.items())
    return (head + "\n".join(lines) + "\n\nAugmented minus real, % of the real arm, 95 % CI over "
            "SRDRN training seeds and test days. Target: heavy MAE_tail <= -5 % and 'helps', "
            "MAE_all and |P99 bias| not 'hurts'.\n\nSettings:\n" + settings + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data")
    p.add_argument("--samples")
    p.add_argument("--config", default="configs/standard.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--label", required=True)
    p.add_argument("--json", type=Path, default=Path("bench/results/augmentation_standard.json"))
    p.add_argument("--report_dir", default="reports")
    p.add_argument("--from_evaluation", type=Path, default=None,
                   help="add an existing evaluate run's evaluation.json instead of running one")
    a = p.parse_args()
    if a.from_evaluation:
        ev = json.loads(a.from_evaluation.read_text())
        settings = f"from {a.from_evaluation}"
    else:
        if not (a.data and a.samples):
            p.error("--data and --samples are needed (or --from_evaluation)")
        run_name = f"augmentation-{a.label}"
        cmd = [sys.executable, "-m", "precipgen", "evaluate", "--config", a.config,
               "--data", a.data, "--augmentation", "--samples", a.samples, "--num_samples", "2",
               "--run_name", run_name, "--report_dir", a.report_dir]
        for item in a.set:
            cmd += ["--set", item]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"evaluate took {time.perf_counter() - t0:.0f} s")
        ev = json.loads((Path(a.report_dir) / run_name / "evaluation.json").read_text())
        settings = " ".join(f"--set {s}" for s in a.set) or "the config as is"
    res = summarise(ev, settings)
    append(a.json, a.label, res, markdown)
    for k, r in res["rows"].items():
        if k.startswith("heavy"):
            print(f"  {k:<22} {r['pct']:+.1f} % [{r['ci'][0]:+.1f}, {r['ci'][1]:+.1f}] {r['verdict']}")
    print(f"target met: {res['target_pass']} -> {a.json.with_suffix('.md')}")


if __name__ == "__main__":
    main()
