"""Where precipgen reads and writes by default.

Outputs go where the user stands, as MLflow's own defaults do: relative paths (the config's
``outputs/...``, ``data/prepared``, ``reports/``) and the default stores (``mlflow.db`` +
``mlruns/``, ``optuna.db``) are relative to the working directory, never to the installed
package. ``PRECIPGEN_HOME``, when set, is that directory: the CLI starts there (so every
relative path, given or default, is relative to it). What ships with the code (profiles,
tuning presets) is package data, found next to this file.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
HOME_ENV = "PRECIPGEN_HOME"


def enter_home() -> Path:
    """Change to ``$PRECIPGEN_HOME`` (created if missing) when it is set; return the working
    directory every relative path is resolved against."""
    env = os.environ.get(HOME_ENV)
    if env:
        home = Path(env).expanduser().resolve()
        home.mkdir(parents=True, exist_ok=True)
        os.chdir(home)
    return Path.cwd()


def default_tracking_uri() -> str:
    """``sqlite:///<cwd>/mlflow.db``; its artifacts go to ``<cwd>/mlruns``."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def default_optuna_storage() -> str:
    return f"sqlite:///{Path.cwd() / 'optuna.db'}"
