"""MLflow tracking: the only module in precipgen that imports mlflow.

- Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<home>/mlflow.db`` with
  artifacts in ``<home>/mlruns`` (home: ``PRECIPGEN_HOME`` or the working directory).
- Safe on empty stores with concurrent processes: a new sqlite store is created under a file
  lock, and the experiment is got-or-created by id (never left to ``mlflow.set_experiment``,
  which returns without activating it when another process created it first).
- Works when launched by ``mlflow run`` (it sets ``MLFLOW_RUN_ID``/``MLFLOW_EXPERIMENT_ID``; we
  resume that run) and when a step is run directly.
- Params flattened and batched, metrics logged asynchronously (flushed at run end), artifacts,
  datasets as inputs with a content digest, lineage tags, URI resolution for step inputs, and a
  generic pyfunc wrapper for precipgen's generators.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from precipgen import __version__, paths
from precipgen.config import flatten
from precipgen.locks import file_lock

MAX_PARAM_LEN = 6000  # mlflow's param value limit is 6000 chars
TRUNC_MARK = "...[truncated]"
REACH_TIMEOUT_S = 10.0
EXPERIMENT = "precipgen"  # MLFLOW_EXPERIMENT_NAME overrides it, as in mlflow itself
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}  # not the GenAI view


class TrackingError(RuntimeError):
    """The tracking server cannot be used; the message names the URI."""


def default_tracking_uri() -> str:
    return paths.default_tracking_uri()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def check_reachable(uri: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """Fail fast (well within 15 s) with a clear error when an HTTP tracking URI does not
    answer, or answers but is no MLflow server (MLflow serves ``/health`` -> ``OK``)."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - user's server
            body = resp.read(64).decode(errors="replace").strip()
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise TrackingError(f"MLflow tracking server {uri} requires authentication (HTTP "
                                f"{e.code}): set MLFLOW_TRACKING_USERNAME and "
                                "MLFLOW_TRACKING_PASSWORD") from e
        what = "is failing" if e.code >= 500 else "answers but is not an MLflow tracking server"
        raise TrackingError(f"{uri} {what} (GET /health: HTTP {e.code}); check "
                            "MLFLOW_TRACKING_URI") from e
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {uri} ({reason}); start one with "
            f"`make server` or set MLFLOW_TRACKING_URI to a reachable server"
        ) from e
    if body != "OK":
        raise TrackingError(f"{uri} answers but is not an MLflow tracking server (GET /health "
                            f"returned {body[:40]!r}, not 'OK'); check MLFLOW_TRACKING_URI")


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    p = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if p in ("", ":memory:") else Path(p)


_STORES_READY: set[str] = set()


def _open_store(uri: str) -> None:
    """Create a new sqlite store's schema in one process only: two processes meeting an empty
    database would both run MLflow's migrations (``duplicate column name``)."""
    db = _sqlite_path(uri)
    if db is None or uri in _STORES_READY:
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(db.with_name(db.name + ".lock")):
        MlflowClient(uri).search_experiments(max_results=1)  # creates/migrates the schema
    _STORES_READY.add(uri)


def _artifact_location(uri: str) -> str | None:
    """A local store keeps its artifacts beside its database (not under whatever directory
    the first run happened to start in)."""
    db = _sqlite_path(uri)
    return (db.resolve().parent / "mlruns").as_uri() if db is not None else None


def _already_exists(e: MlflowException) -> bool:
    text = str(e).lower()
    return (e.error_code == "RESOURCE_ALREADY_EXISTS" or "already exists" in text
            or "unique constraint" in text)


def ensure_experiment(name: str, uri: str) -> str:
    """The id of experiment ``name``, created if missing; safe when several processes create
    it at the same moment (the loser retries the lookup with backoff)."""
    client = MlflowClient(uri)
    for attempt in range(10):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"experiment '{name}' is deleted in {uri}: restore it (`mlflow experiments "
                    f"restore --experiment-id {exp.experiment_id}`) or set "
                    "MLFLOW_EXPERIMENT_NAME to another name")
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(uri),
                                            tags=EXPERIMENT_TAGS)
        except MlflowException as e:
            if not _already_exists(e):
                raise
        time.sleep(0.05 * 2**attempt * (1 + random.random()))
    raise TrackingError(f"experiment '{name}' could not be created or found in {uri}")


def setup(experiment: str | None = None) -> str:
    """Point mlflow at the tracking URI, check it answers, choose the experiment (by id)."""
    uri = tracking_uri()
    # Bounded retries so a dead server is an error, not a long hang.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # Each step prints its own one summary line with the run URL; mlflow's own is noise.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    check_reachable(uri)
    _open_store(uri)
    mlflow.set_tracking_uri(uri)
    if experiment and not os.environ.get("MLFLOW_EXPERIMENT_ID"):
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment
        try:
            _chosen[uri] = ensure_experiment(name, uri)
        except MlflowException as e:
            if e.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED") or "401" in str(e):
                raise TrackingError(
                    f"MLflow tracking server {uri} refused the request ({e.error_code}): it "
                    "requires authentication; set MLFLOW_TRACKING_USERNAME and "
                    "MLFLOW_TRACKING_PASSWORD") from e
            raise
        # Not mlflow.set_experiment: it exports MLFLOW_EXPERIMENT_ID to every later child
        # process, which would then file its runs under this store's id in another store.
    return uri


_chosen: dict[str, str] = {}  # tracking URI -> experiment id chosen by setup()


def experiment_id() -> str | None:
    """The experiment runs go to: ``mlflow run``'s / the pipeline's, else the one set up."""
    return os.environ.get("MLFLOW_EXPERIMENT_ID") or _chosen.get(tracking_uri())


def git_info() -> dict[str, str]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=paths.PACKAGE_DIR, capture_output=True, text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=paths.PACKAGE_DIR, capture_output=True, text=True, timeout=5,
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
        """Hyperparameters as params; where things are (paths, dirs) as ``path.<key>`` tags,
        so that runs from two machines or directories still compare side by side. Unset
        values (None, "") are not logged."""
        flat = {k: v for k, v in flatten(params).items() if v is not None and v != ""}
        paths = {k: v for k, v in flat.items() if is_path_key(k)}
        if paths:
            self.set_tags({f"path.{k}": v for k, v in paths.items()})
        flat = {k: v for k, v in flat.items() if k not in paths}
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

    def set_description(self, text: str) -> None:
        """The run's description in the MLflow UI (markdown)."""
        self.set_tags({"mlflow.note.content": text})

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


PATH_KEYS = frozenset({"output", "output_dir", "output_root", "report_dir", "data", "path",
                       "samples", "augment_out", "input", "checkpoint_dir", "storage"})


def is_path_key(key: str) -> bool:
    """``data.path``, ``train.output_dir``, ``report_dir``: a location, not a hyperparameter."""
    return key.rpartition(".")[2] in PATH_KEYS


@contextlib.contextmanager
def start_run(
    entry_point: str,
    params: dict[str, Any] | None = None,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
    nested: bool = False,
    experiment: str | None = EXPERIMENT,
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
    active = mlflow.start_run(run_id=rid, run_name=None if rid else run_name, nested=nested,
                              experiment_id=None if rid else experiment_id())
    if env_run and active.info.run_id == env_run:
        os.environ.pop("MLFLOW_RUN_ID", None)
        _name_project_run(active, run_name or entry_point)
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


# MLflow's generated run names: "<adjective>-<animal>-<number>"
_GENERATED_NAME = re.compile(r"^[a-z]+-[a-z]+-\d{1,4}$")


def _name_project_run(active: Any, name: str) -> None:
    """`mlflow run` creates the run with a random name: give it the entry point's name, as a
    CLI run has, unless the user chose one (`mlflow run --run-name`)."""
    tags = mlflow.get_run(active.info.run_id).data.tags
    if "mlflow.project.entryPoint" in tags and _GENERATED_NAME.match(active.info.run_name or ""):
        mlflow.set_tag("mlflow.runName", name)


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
        """Generic pyfunc around a precipgen checkpoint. ``loader(checkpoint, normalization)``
        builds the generator (:func:`precipgen.models.registry.open_generator`); it is given by
        the caller, so this module never imports the models, and cloudpickle stores it as a
        reference to an importable function, not as code.

        The contract (also in each registered version's description): ``model_input`` is
        low-res predictors in physical units, an array ``(N, C, h, w)``, float32 or float64
        (the registered tensor schema takes arrays; a DataFrame is refused by MLflow's schema
        check before it gets here); ``params`` (num_samples, mode,
        temperature, seed; an unknown name is refused); the output is batch-first
        ``(N, num_samples, 1, H, W)`` float32 precipitation in the dataset's units.
        """

        def __init__(self, loader: Any = None):
            self.loader = loader

        def load_context(self, context: Any) -> None:
            self.generator = self.loader(
                Path(context.artifacts["checkpoint"]), Path(context.artifacts["normalization"])
            )
            _refuse_unknown_params()
            _accept_any_float()

        def predict(self, context, model_input, params=None):  # no hints: mlflow parses them
            return batch_first(self.generator, model_input, params)


def batch_first(generator: Any, model_input: Any, params: dict[str, Any] | None) -> np.ndarray:
    """The pyfunc contract around ``generator.predict`` (ensemble-first): any float input,
    output ``(N, samples, 1, H, W)``."""
    x = model_input
    if hasattr(x, "columns"):  # only reachable without the schema (python_model called directly)
        if "X_lr" not in x.columns:
            raise ValueError(f"a DataFrame input needs an 'X_lr' column (got {list(x.columns)})")
        x = np.stack([np.asarray(v, dtype=np.float32) for v in x["X_lr"]])
    x = np.asarray(x, dtype=np.float32)
    out = generator.predict(x, **(params or {}))
    return np.ascontiguousarray(np.moveaxis(out, 0, 1))


class UnknownParamError(ValueError):
    """A misspelled inference param: refused instead of silently ignored."""


class _RefuseUnknownParams(logging.Filter):
    # mlflow drops params the signature does not name with only a warning; a typo such as
    # num_sample would then silently give one member. Turn that warning into an error.
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith("Unrecognized params"):
            raise UnknownParamError(msg.replace(" are ignored for inference", " refused")
                                    .split(" To enable them")[0])
        return True


def _accept_any_float() -> None:
    """mlflow's tensor schema demands the logged dtype exactly: a float64 array (numpy's and
    often xarray's default) would fail against our float32 signature with a page-long error.
    Cast floating input to the schema's floating dtype first; everything else is unchanged."""
    from mlflow.models import utils as model_utils

    enforce = model_utils._enforce_tensor_spec
    if getattr(enforce, "_precipgen", False):
        return

    def cast_then_enforce(values: Any, tensor_spec: Any) -> Any:
        want = np.dtype(tensor_spec.type)
        if (isinstance(values, np.ndarray) and values.dtype != want
                and np.issubdtype(values.dtype, np.floating) and np.issubdtype(want, np.floating)):
            values = values.astype(want)
        return enforce(values, tensor_spec)

    cast_then_enforce._precipgen = True  # type: ignore[attr-defined]
    model_utils._enforce_tensor_spec = cast_then_enforce


def _refuse_unknown_params() -> None:
    log = logging.getLogger("mlflow.models.utils")
    if not any(isinstance(f, _RefuseUnknownParams) for f in log.filters):
        log.addFilter(_RefuseUnknownParams())


def contract_text(generator: Any, norm: dict[str, Any], example: np.ndarray,
                  output: np.ndarray, params: dict[str, Any]) -> str:
    """What a user of a registered version needs to call it (its description)."""
    names = list(norm.get("channel_names") or [])
    units = norm.get("units", "mm per time step")
    return (
        f"Input: low-resolution predictors in physical units, shape (N, C, h, w) = "
        f"(N, {', '.join(map(str, example.shape[1:]))}), float32 or float64, channels in this "
        f"order: {', '.join(names)}. Output: precipitation in {units}, batch-first "
        f"(N, num_samples, 1, H, W) = (N, num_samples, {', '.join(map(str, output.shape[2:]))}), "
        f"float32, 0 at sea. Params (an unknown name is refused): "
        + ", ".join(f"{k} (default {v})" for k, v in params.items()) + "."
    )


def log_generator_model(
    checkpoint: Path,
    normalization: Path,
    registered_name: str | None,
    example_input: np.ndarray,
    default_params: dict[str, Any],
    loader: Any,
    alias: str = "candidate",
) -> str | None:
    """Log a checkpoint as a pyfunc model under ``model`` with input example, input/output
    schema and its contract; register it and set ``alias`` (``candidate``: evaluate promotes
    it to ``champion`` when the success indicators pass).

    Returns the registered version (or None when not registering).
    """
    from mlflow.models import infer_signature

    params = {k: v for k, v in default_params.items()}
    # the model's own dtype; float64 input is cast on load (_accept_any_float)
    x = np.asarray(example_input, dtype=np.float32)
    generator = loader(Path(checkpoint), Path(normalization))
    y = batch_first(generator, x, {**params, "num_samples": min(int(params.get("num_samples", 1)), 2)})
    signature = infer_signature(x, y, params=params)
    norm = json.loads(Path(normalization).read_text())
    contract = contract_text(generator, norm, x, y, params)
    # PrecipgenPyfunc and its loader live in importable modules, so cloudpickle stores
    # references, not code; the weights are plain artifacts loaded weights_only.
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_logger.level
    pyfunc_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=PrecipgenPyfunc(loader),
                artifacts={"checkpoint": str(checkpoint), "normalization": str(normalization)},
                signature=signature,
                input_example=x,
                registered_model_name=registered_name,
                pip_requirements=[f"precipgen=={__version__}"],
                metadata={"channel_names": norm.get("channel_names"), "units": norm.get("units"),
                          "output_axes": "N, num_samples, 1, H, W"},
            )
    finally:
        pyfunc_logger.setLevel(level)
    if not registered_name:
        return None
    version = str(info.registered_model_version)
    client = MlflowClient()
    client.update_model_version(registered_name, version, description=contract)
    if alias.lower() != "latest":  # reserved: mlflow resolves @latest to the newest version
        client.set_registered_model_alias(registered_name, alias, version)
    return version


def promote(run_id: str, alias: str = "champion") -> list[str]:
    """Set ``alias`` on every registered version logged by ``run_id``; returns "name vN"."""
    setup()
    client = MlflowClient()
    done = []
    for mv in client.search_model_versions(f"run_id = '{run_id}'"):
        client.set_registered_model_alias(mv.name, alias, mv.version)
        done.append(f"{mv.name} v{mv.version}")
    return done


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
