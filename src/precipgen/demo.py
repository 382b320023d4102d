"""``make demo``: the whole pipeline (``precipgen main --profile quick``) on the embedded
synthetic data, then where to look.

Everything goes where it is started (``make demo``: the checkout), or to ``PRECIPGEN_HOME``:
tracking to ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlflow.db`` with artifacts
in ``<cwd>/mlruns``. Steps whose inputs did not change are reused from an earlier demo run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from precipgen import cli, paths

ROOT = Path("outputs") / "pipeline-quick"
STEPS: list[tuple[str, list[str]]] = [
    ("main", ["main", "--profile", "quick", "--output_root", str(ROOT)]),
]


def main() -> int:
    here = paths.enter_home()
    uri = os.environ.get("MLFLOW_TRACKING_URI")  # read first: mlflow sets it once a run starts
    for name, argv in STEPS:
        print(f"== {name}", flush=True)
        rc = cli.main(argv)
        if rc:
            print(f"demo: step {name} failed (exit {rc})", file=sys.stderr)
            return rc
    print("\ndemo done.")
    print(f"  prepared dataset: {here / ROOT / 'prepared'}")
    print(f"  models, samples:  {here / ROOT}/{{vae3d,crps,cvae,synth,augmented}}")
    print(f"  report:           {here / 'reports' / 'evaluate-quick' / 'report.html'}")
    if uri and uri.startswith(("http://", "https://")):
        print(f"  MLflow runs:      {uri}  (open it in a browser)")
    elif uri:
        print(f"  MLflow runs:      {uri}")
        print(f"  open the UI:      .venv/bin/mlflow ui --backend-store-uri {uri}")
    else:
        print(f"  MLflow runs:      {paths.default_tracking_uri()} (artifacts in {here / 'mlruns'})")
        print("  open the UI:      make ui   then http://127.0.0.1:5000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
