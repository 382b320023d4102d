"""MLflow tracking: the only module in precipgen that imports mlflow.

- Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo>/mlflow.db``.
- Works when launched by ``mlflow run`` (it sets ``MLFLOW_RUN_ID``/``MLFLOW_EXPERIMENT_ID``; we
  resume that run) and when a step is run directly.
- Params flattened and batched, metrics logged asynchronously (flushed at run end), artifacts,
  datasets as inputs with a content digest, lineage tags, URI resolution for step inputs, and a
  generic pyfunc wrapper for precipgen's generators.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from precipgen import __version__
from precipgen.config import REPO_ROOT, flatten

MAX_PARAM_LEN = 6000  # mlflow's param value limit is 6000 chars
TRUNC_MARK = "...[truncated]"
REACH_TIMEOUT_S = 10.0


class TrackingError(RuntimeError):
    """The tracking server cannot be used; the message names the URI."""


def default_tracking_uri() -> str:
    return f"sqlite:///{REPO_ROOT / 'mlflow.db'}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def check_reachable(uri: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """Fail fast (well within 15 s) with a clear error when an HTTP server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - user's server
            if resp.status >= 500:
                raise TrackingError(f"MLflow tracking server {uri} answered HTTP {resp.status}")
    except urllib.error.HTTPError as e:
        if e.code >= 500:
            raise TrackingError(f"MLflow tracking server {uri} answered HTTP {e.code}") from e
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {uri} ({reason}); start one with "
            f"`make server` or set MLFLOW_TRACKING_URI to a reachable server"
        ) from e


def setup(experiment: str | None = None) -> str:
    """Point mlflow at the tracking URI, check it answers, choose the experiment."""
    uri = tracking_uri()
    # Bounded retries so a dead server is an error, not a long hang.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # Each step prints its own one summary line with the run URL; mlflow's own is noise.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    if experiment and not os.environ.get("MLFLOW_EXPERIMENT_ID"):
        mlflow.set_experiment(experiment)
    return uri


def git_info() -> dict[str, str]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    if not commit:
        return {}
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}


def _param_value(v: Any) -> str:
    s = str(v)
    return s if len(s) <= MAX_PARAM_LEN else s[: MAX_PARAM_LEN - len(TRUNC_MARK)] + TRUNC_MARK


@dataclass
class Run:
    """Handle on the active run with precipgen's logging helpers."""

    run_id: str
    experiment_id: str
    uri: str

    @property
    def url(self) -> str:
        if self.uri.startswith("http"):
            base = self.uri.rstrip("/")
            return f"{base}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return f"{self.run_id} in {self.uri} (open with `make ui`)"

    # ---- params / tags / metrics ----
    def log_params(self, params: dict[str, Any]) -> None:
        flat = flatten(params)
        existing = mlflow.get_run(self.run_id).data.params
        changed = sorted(k for k, v in flat.items() if k in existing and existing[k] != _param_value(v))
        if changed:  # MLflow params are immutable: a resumed run keeps what it started with
            print(f"warning: run {self.run_id} keeps its original values of {', '.join(changed[:8])}"
                  f"{' ...' if len(changed) > 8 else ''} (MLflow params cannot change on resume)",
                  file=sys.stderr)
        items = [
            mlflow.entities.Param(k, _param_value(v))
            for k, v in flat.items()
            if k not in existing  # resumed runs: params are immutable, log only new keys
        ]
        client = MlflowClient()
        for i in range(0, len(items), 100):
            client.log_batch(self.run_id, params=items[i : i + 100], synchronous=True)

    def set_tags(self, tags: dict[str, Any]) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items() if v is not None})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
        if clean:
            mlflow.log_metrics(clean, step=step, synchronous=False)

    # ---- artifacts ----
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        mlflow.log_text(text, artifact_file)

    def log_dict(self, obj: dict[str, Any], artifact_file: str) -> None:
        mlflow.log_dict(obj, artifact_file)

    def log_figure(self, fig: Any, artifact_file: str) -> None:
        mlflow.log_figure(fig, artifact_file)

    def log_dataset(self, root: str | Path, digest: str, name: str, context: str = "training",
                    profile: dict[str, Any] | None = None) -> None:
        """Record a dataset directory as an MLflow input, identified by its content digest."""

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        # FileSystemDatasetSource is abstract; the registry gives the local-file source. It
        # warns that two equivalent local sources match (schemes "" and "file"): harmless.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(Path(root).resolve()))
        ds = MetaDataset(source=source, name=name, digest=digest)
        mlflow.log_input(ds, context=context)
        if profile:
            self.set_tags({f"dataset.{k}": v for k, v in profile.items()})

    def set_lineage(self, upstream: dict[str, str | None]) -> None:
        """Tag the run ids of what this step consumed: ``{"dataset": id, "model": id}``."""
        self.set_tags({f"upstream.{k}_run_id": v for k, v in upstream.items() if v})


@contextlib.contextmanager
def start_run(
    entry_point: str,
    params: dict[str, Any] | None = None,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
    nested: bool = False,
    experiment: str | None = "precipgen",
    run_id: str | None = None,
    config_yaml: str | None = None,
) -> Iterator[Run]:
    """Start (or resume) a run; log params, standard tags and the resolved config.

    Honours ``MLFLOW_RUN_ID`` set by ``mlflow run``. ``run_id`` resumes a given run (``--resume``).
    Async metric logging is flushed before the run ends, also on error.
    """
    uri = setup(experiment)
    env_run = os.environ.get("MLFLOW_RUN_ID") if not nested else None
    rid = run_id or env_run
    if rid and not nested and mlflow.active_run() is not None:
        rid = None  # already inside the run mlflow run created
    # mlflow.start_run falls back to MLFLOW_RUN_ID when given no run id: once the run that
    # `mlflow run` (or the pipeline) created is open, the variable is spent, or a nested run
    # (an SRDRN arm, a tuning trial) would re-open the parent instead of making a child.
    if nested:
        os.environ.pop("MLFLOW_RUN_ID", None)
    active = mlflow.start_run(run_id=rid, run_name=None if rid else run_name, nested=nested)
    if env_run and active.info.run_id == env_run:
        os.environ.pop("MLFLOW_RUN_ID", None)
    run = Run(active.info.run_id, active.info.experiment_id, uri)
    status = "FINISHED"
    try:
        run.set_tags(
            {
                "precipgen.entry_point": entry_point,
                "precipgen.version": __version__,
                **git_info(),
                **(tags or {}),
            }
        )
        if params:
            run.log_params(params)
        if config_yaml is not None:
            run.log_text(config_yaml, "config.yaml")
        yield run
    except BaseException:
        status = "KILLED" if isinstance_interrupt() else "FAILED"
        raise
    finally:
        with contextlib.suppress(Exception):
            mlflow.flush_async_logging()
        mlflow.end_run(status=status)


def isinstance_interrupt() -> bool:
    return isinstance(sys.exc_info()[1], KeyboardInterrupt)


def flush() -> None:
    mlflow.flush_async_logging()


# ---------------------------------------------------------------- inputs from other steps
@dataclass
class Resolved:
    """A step input resolved to a local path, with the run that produced it (if any)."""

    path: Path
    run_id: str | None


def resolve(uri: str, dst: str | Path | None = None) -> Resolved:
    """Accept a local path, ``runs:/<id>/<path>`` or ``models:/<name>@<alias>`` (or /<version>).

    Artifacts are downloaded (to ``dst`` or a temp dir); for registered models the path is the
    model directory, whose ``artifacts/`` holds the checkpoint.
    """
    if not uri:
        raise ValueError("empty input URI")
    if uri.startswith(("runs:/", "models:/")):
        setup()
        out = Path(dst or tempfile.mkdtemp(prefix="precipgen-"))
        run_id: str | None = None
        if uri.startswith("runs:/"):
            run_id = uri[len("runs:/"):].split("/", 1)[0]
        else:
            run_id = model_version(uri).run_id
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(out))
        except Exception as e:  # mlflow raises several types; all mean "not there"
            raise FileNotFoundError(f"cannot download {uri}: {e}") from e
        return Resolved(Path(local), run_id)
    p = Path(uri)
    if not p.exists():
        raise FileNotFoundError(f"input not found: {p}")
    return Resolved(p, producing_run_id(p))


def producing_run_id(path: Path) -> str | None:
    """Read the ``run_id`` a step wrote next to its output (``.precipgen_run``), if any."""
    for cand in (path / ".precipgen_run", path.parent / ".precipgen_run"):
        if cand.is_file():
            return cand.read_text().strip() or None
    return None


def mark_output(path: Path, run_id: str) -> None:
    """Remember which run produced a local output directory (for lineage when reused)."""
    (Path(path) / ".precipgen_run").write_text(run_id + "\n")


def model_version(uri: str) -> Any:
    """``models:/name@alias`` or ``models:/name/version`` -> ModelVersion (clear error if none)."""
    client = MlflowClient()
    spec = uri[len("models:/"):]
    try:
        if "@" in spec:
            name, alias = spec.split("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, version = spec.rsplit("/", 1)
        return client.get_model_version(name, version)
    except Exception as e:
        raise FileNotFoundError(
            f"no registered model for {uri} in {tracking_uri()}: train one first ({e})"
        ) from e


# ---------------------------------------------------------------- models
# mlflow warns, on subclassing PythonModel, that predict has no type hints (and forces the
# warning through its own filter). Our input is an array described by the logged signature,
# not list[...] rows, so the warning is noise: swallow it while the class is defined.
with contextlib.redirect_stderr(io.StringIO()):

    class PrecipgenPyfunc(mlflow.pyfunc.PythonModel):
        """Generic pyfunc: loads a precipgen checkpoint via :func:`precipgen.models.load_generator`.

        ``predict(model_input, params)``: ``model_input`` is a float array of low-res predictors in
        physical units, ``(N, C, h, w)`` (or a DataFrame with an ``X_lr`` column of nested lists);
        ``params`` (num_samples, mode, temperature, seed) are passed through. Returns samples in
        physical units.
        """

        def load_context(self, context: Any) -> None:
            from precipgen.models import load_generator

            self.generator = load_generator(
                Path(context.artifacts["checkpoint"]), Path(context.artifacts["normalization"])
            )

        def predict(self, context, model_input, params=None):  # no hints: mlflow parses them
            x = model_input
            if hasattr(x, "columns"):
                x = np.stack([np.asarray(v, dtype=np.float32) for v in x["X_lr"]])
            return self.generator.predict(np.asarray(x, dtype=np.float32), **(params or {}))


def log_generator_model(
    checkpoint: Path,
    normalization: Path,
    registered_name: str | None,
    example_input: np.ndarray,
    default_params: dict[str, Any],
    alias: str = "latest",
) -> str | None:
    """Log a checkpoint as a pyfunc model under ``model``; register it and set ``alias``.

    Returns the registered version (or None when not registering).
    """
    from mlflow.models import infer_signature

    params = {k: v for k, v in default_params.items()}
    signature = infer_signature(example_input, None, params=params)
    # PrecipgenPyfunc holds no state and lives in an importable module, so cloudpickle stores
    # a reference to it, not code; the weights are plain artifacts loaded weights_only. The
    # signature describes the input, so mlflow's warnings about both are noise here.
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_logger.level
    pyfunc_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example.*", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=PrecipgenPyfunc(),
                artifacts={"checkpoint": str(checkpoint), "normalization": str(normalization)},
                signature=signature,
                registered_model_name=registered_name,
                pip_requirements=[f"precipgen=={__version__}"],
            )
    finally:
        pyfunc_logger.setLevel(level)
    if not registered_name:
        return None
    version = str(info.registered_model_version)
    if alias.lower() != "latest":  # reserved: mlflow resolves @latest to the newest version
        MlflowClient().set_registered_model_alias(registered_name, alias, version)
    return version


def load_pyfunc(uri: str) -> Any:
    setup()
    return mlflow.pyfunc.load_model(uri)


def get_run(run_id: str) -> Any:
    setup()
    return MlflowClient().get_run(run_id)


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    setup()
    return [(m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key)]


# ---------------------------------------------------------------- multi-step workflows
def create_child_run(parent_run_id: str, name: str, tags: dict[str, str]) -> str:
    """A run nested under ``parent_run_id`` for a step that a subprocess will fill in
    (it picks the run up through ``MLFLOW_RUN_ID``)."""
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    run = client.create_run(
        parent.info.experiment_id,
        run_name=name,
        tags={"mlflow.parentRunId": parent_run_id, **tags},
    )
    return run.info.run_id


def find_finished_run_by_tag(key: str, value: str, experiment_id: str) -> str | None:
    """The newest FINISHED run whose tag ``key`` equals ``value`` (step reuse)."""
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{key}` = '{value}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def run_status(run_id: str) -> str:
    return MlflowClient().get_run(run_id).info.status


def terminate_run(run_id: str, status: str) -> None:
    MlflowClient().set_terminated(run_id, status=status)


def set_run_tags(run_id: str, tags: dict[str, Any]) -> None:
    client = MlflowClient()
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))
