"""Optuna studies over the trainers' hyperparameters, tracked in MLflow (``precipgen tune``).

    precipgen tune --study cvae --n_trials 20 --config configs/quick.yaml --set data.path=...

- The study preset ``tuning/<study>.yaml`` (or ``--space FILE``) names the trainer, the
  objective(s) and the parameters (config key paths); see ``tuning/cvae.yaml``.
- Every trial runs in this process as a nested MLflow run under one parent run per
  invocation, with its params, per-epoch metrics and tags ``tune.trial_number``,
  ``tune.study_name``, ``tune.state`` (COMPLETE / PRUNED / FAIL) and ``tune.error``. The Optuna
  trial keeps the run id as user attribute ``mlflow_run_id``. Trials register no model and
  write to ``<output_dir>/tune/<study_name>/trial_<NNNN>/`` (trainer output + ``trial.log``).
- The objective is reported every epoch; the pruner (median / hyperband / none) stops bad
  trials early. A trial that raises or reaches a NaN is FAIL and the study goes on (3 failures
  in a row stop it: the cause is then almost surely not the hyperparameters).
- Storage: ``sqlite:///<home>/optuna.db`` (home: ``PRECIPGEN_HOME`` or the working directory;
  what ``make dashboard`` opens) or ``--storage postgresql://user@host/db``, shared by any
  number of processes/machines running the same command; the same ``--study_name`` resumes.
  Optuna creates its tables without a lock (optuna#1092), so workers meeting an empty database
  create the schema and the study one at a time (a PostgreSQL advisory lock, a file lock for
  sqlite), then share it. ``--n_trials`` counts this process's trials.
  Give each concurrent worker its own ``--seed`` (or none): equal seeds propose equal
  start-up trials.
- At the end the parent run logs the best value(s) and params, ``best_params.yaml`` (a FULL
  resolved config with the best params applied: ``precipgen train_cvae --config
  best_params.yaml``), ``best_overrides.txt`` (the same as ``--set`` flags, to add to your
  own ``--config``), ``trials.csv`` and figures (history, importances, parallel coordinates,
  Pareto front for multi-objective studies).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from precipgen import paths, tracking
from precipgen.config import Config, ConfigError, load_config
from precipgen.locks import file_lock
from precipgen.tuning.space import StudySpec, to_overrides

MAX_CONSECUTIVE_FAILURES = 3
OUTPUT_KEY = {"cvae": "train.output_dir", "finetune_crps": "finetune.output_dir"}
EPOCHS_KEY = {"cvae": "train.epochs", "finetune_crps": "finetune.epochs"}


class StorageError(ValueError):
    """The Optuna storage cannot be opened or does not fit the preset; names the URL."""


class TrialFailed(RuntimeError):
    """A trial's own error, wrapped so Optuna records FAIL and the study goes on."""


SCHEMA_LOCK_KEY = 0x70726563  # pg_advisory_lock key shared by every precipgen worker
SCHEMA_RETRIES = 5


def default_storage() -> str:
    return paths.default_optuna_storage()


def normalize_storage(url: str) -> str:
    """``postgresql://`` means psycopg (v3) to SQLAlchemy 2.1; precipgen ships psycopg2."""
    if url.startswith(("postgresql://", "postgres://")):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:
            return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def safe_url(url: str) -> str:
    """The storage URL without its password (it goes to MLflow params and the console)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: nothing to hide
        return url


@dataclass
class Settings:
    spec: StudySpec
    study_name: str
    storage: str
    sampler: str
    pruner: str
    n_trials: int
    timeout: float | None
    seed: int | None
    config_path: str | None
    overrides: list[str]  # --overrides then --set (the preset's `set` comes first)
    pretrained: str | None = None


# ------------------------------------------------------------------ the study
def make_sampler(s: Settings) -> Any:
    import optuna

    kind = s.sampler
    opts = dict(s.spec.sampler_options) if kind == s.spec.sampler else {}  # preset's options
    classes = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
               "random": optuna.samplers.RandomSampler}
    try:
        return classes[kind](seed=s.seed, **opts)
    except TypeError as e:
        raise ConfigError(f"{s.spec.source}: sampler options {opts} for {kind}: {e}") from e


def make_pruner(s: Settings, epochs: int) -> Any:
    import optuna

    opts = {k: v for k, v in s.spec.pruner.items() if k != "kind"}
    if s.pruner != s.spec.pruner.get("kind"):
        opts = {}  # --pruner chose another kind: the preset's options are not for it
    try:
        if s.pruner == "median":
            return optuna.pruners.MedianPruner(**opts)
        if s.pruner == "hyperband":  # one rung per epoch up to the trial's epoch budget
            return optuna.pruners.HyperbandPruner(**{"min_resource": 1, "max_resource": epochs,
                                                     **opts})
    except TypeError as e:
        raise ConfigError(f"{s.spec.source}: pruner options {opts} for {s.pruner}: {e}") from e
    return optuna.pruners.NopPruner()


@contextlib.contextmanager
def schema_lock(url: str) -> Iterator[None]:
    """Serialise schema and study creation between workers: a PostgreSQL advisory lock (held
    on its own connection), a file lock beside a sqlite file; other backends rely on
    :func:`open_study`'s retries."""
    if url.startswith("sqlite:///") and url[len("sqlite:///"):] not in ("", ":memory:"):
        db = Path(url[len("sqlite:///"):])
        with file_lock(db.with_name(db.name + ".lock")):
            yield
        return
    if not url.startswith(("postgresql", "postgres://")):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(normalize_storage(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"),
                             {"k": SCHEMA_LOCK_KEY})
    finally:
        engine.dispose()


def open_study(s: Settings, epochs: int) -> Any:
    """Create the study, or load it (resume / another worker) and check it fits the preset."""
    import optuna
    import sqlalchemy.exc

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for attempt in range(SCHEMA_RETRIES):
        try:
            with schema_lock(s.storage):
                # Heartbeats let a worker that dies mid-trial have its trial marked FAIL by
                # the others.
                storage = optuna.storages.RDBStorage(
                    normalize_storage(s.storage), heartbeat_interval=60, grace_period=180,
                    engine_kwargs=None if s.storage.startswith("sqlite")
                    else {"pool_pre_ping": True},
                )
                study = optuna.create_study(
                    storage=storage, study_name=s.study_name, sampler=make_sampler(s),
                    pruner=make_pruner(s, epochs), directions=s.spec.directions,
                    load_if_exists=True,
                )
                return _check_study(study, s)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # A backend without a lock: another worker created the same table/row first.
            if attempt == SCHEMA_RETRIES - 1:
                raise
            time.sleep(0.2 * 2**attempt)
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ModuleNotFoundError) as e:
            raise StorageError(f"cannot open Optuna storage {safe_url(s.storage)}: "
                               f"{str(e).splitlines()[0]}") from e
    raise AssertionError("unreachable")


def _check_study(study: Any, s: Settings) -> Any:
    have = [d.name.lower() for d in study.directions]
    trainer = study.user_attrs.get("trainer")
    if have != s.spec.directions or trainer not in (None, s.spec.trainer):
        raise StorageError(
            f"study '{s.study_name}' in {safe_url(s.storage)} is a {trainer or '?'} study with "
            f"directions {have}; preset {s.spec.source} is {s.spec.trainer} with "
            f"{s.spec.directions}: choose another --study_name")
    if trainer is None:
        study.set_user_attr("trainer", s.spec.trainer)
        study.set_user_attr("objectives", [o.label for o in s.spec.objectives])
        study.set_metric_names([o.label for o in s.spec.objectives])  # named in the dashboard
    return study


# ------------------------------------------------------------------ one trial
def pruning_callback(trial: Any, objective: Any, report: bool = True
                     ) -> Callable[[int, dict[str, float], Any], None]:
    """The trainers' ``on_epoch_end``: report the objective every epoch; raise TrialPruned when
    the pruner says so, FloatingPointError on a NaN/inf objective, ConfigError when the metric
    does not exist (a typo in the preset: stop the study, not just the trial)."""
    import optuna

    def on_epoch_end(epoch: int, metrics: dict[str, float], model: Any = None) -> None:
        if objective.metric not in metrics:
            names = sorted(metrics)
            match = difflib.get_close_matches(objective.metric, names, n=1, cutoff=0.0)
            hint = f" (did you mean '{match[0]}'?)" if match else ""
            raise ConfigError(f"objective metric '{objective.metric}' is not logged by the "
                              f"trainer{hint}; available: {', '.join(names)}")
        value = objective.of(metrics[objective.metric])
        trial.set_user_attr("epochs_run", int(epoch))
        if not math.isfinite(value):
            raise FloatingPointError(f"{objective.label} is {value} at epoch {epoch}")
        if not report:  # multi-objective: Optuna cannot prune, nothing to report
            return
        trial.report(value, int(epoch))
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: {objective.label}={value:.6g}")

    return on_epoch_end


@contextlib.contextmanager
def captured(log: Path) -> Iterator[None]:
    """The trainer's console (epoch lines, its tqdm bars) goes to the trial's log file; the
    console keeps one line per trial."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield


@dataclass
class TrialRunner:
    """The Optuna objective: one trial = one nested MLflow run around the trainer."""

    s: Settings
    train_fn: Callable[..., tuple[str | None, Any]]
    root: Path  # <output_dir>/tune/<study_name>
    started: float = field(default_factory=time.perf_counter)
    epochs: int = 0  # the trial budget (config)
    trial_epochs: int = 0  # epochs run by this process's trials
    numbers: list[int] = field(default_factory=list)
    fail_streak: int = 0
    stop_reason: str = ""
    bar: Any = None

    def __call__(self, trial: Any) -> float | list[float]:
        import optuna

        from precipgen import tracking

        spec = self.s.spec
        self.numbers.append(trial.number)
        values = {p.name: p.suggest(trial) for p in spec.params}
        out = self.root / f"trial_{trial.number:04d}"
        cfg = spec.apply(values, self.s.config_path,
                         [*self.s.overrides, f"{OUTPUT_KEY[spec.trainer]}={json.dumps(str(out))}"])
        log = out / "trial.log"
        trial.set_user_attr("output_dir", str(out))
        tags = {"tune.study_name": self.s.study_name, "tune.trial_number": trial.number,
                "tune.trainer": spec.trainer, "tune.state": "RUNNING"}
        pruned: optuna.TrialPruned | None = None
        with tracking.start_run("tune_trial", params=values, nested=True, tags=tags,
                                run_name=f"{self.s.study_name}-trial-{trial.number:04d}") as run:
            trial.set_user_attr("mlflow_run_id", run.run_id)
            report = pruning_callback(trial, spec.objectives[0], report=not spec.multi)
            try:
                with captured(log):
                    _, result = self.train_fn(cfg, run=run, on_epoch_end=report, register=False)
                objs = [o.reduce(result.history, result.best_epoch) for o in spec.objectives]
                bad = [o.label for o, v in zip(spec.objectives, objs) if not math.isfinite(v)]
                if bad:
                    raise FloatingPointError(f"objective {', '.join(bad)} is not finite: {objs}")
                run.log_metrics({f"objective_{o.key}": v for o, v in zip(spec.objectives, objs)})
                run.set_tags({"tune.state": "COMPLETE"})
            except optuna.TrialPruned as e:
                run.set_tags({"tune.state": "PRUNED", "tune.pruned": str(e)})
                with open(log, "a") as f:  # the loop's line for this epoch never printed
                    f.write(f"\ntrial {trial.number} {e}\n")
                pruned = e  # raised after the run closes: a pruned run is FINISHED, not FAILED
            except (ConfigError, KeyboardInterrupt) as e:  # not the trial's fault: stop all
                run.set_tags({"tune.state": "FAIL", "tune.error": _error(e)})
                trial.set_user_attr("error", _error(e))
                raise
            except Exception as e:
                run.set_tags({"tune.state": "FAIL", "tune.error": _error(e)})
                trial.set_user_attr("error", _error(e))
                with open(log, "a") as f:
                    traceback.print_exc(file=f)
                raise TrialFailed(_error(e)) from e
            finally:
                self.trial_epochs += int(trial.user_attrs.get("epochs_run", 0))
                if log.exists():
                    run.log_artifact(log)
        if pruned is not None:
            raise pruned
        return objs if spec.multi else objs[0]

    def after_trial(self, study: Any, frozen: Any) -> None:
        """One console line per trial; stop after too many failures in a row."""
        from tqdm.auto import tqdm

        state = frozen.state.name
        secs = frozen.duration.total_seconds() if frozen.duration else 0.0
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in frozen.params.items())
        epochs = frozen.user_attrs.get("epochs_run", 0)
        if state == "COMPLETE":
            vals = ", ".join(f"{o.label}={v:.6g}" for o, v in zip(self.s.spec.objectives,
                                                                  frozen.values))
            what = f"{vals} after {epochs} epoch{'s' if epochs != 1 else ''}"
            self.fail_streak = 0
        elif state == "PRUNED":
            last = frozen.intermediate_values.get(epochs)
            shown = f" ({self.s.spec.objectives[0].label}={last:.6g})" if last is not None else ""
            what = f"pruned at epoch {epochs}/{self.epochs}{shown}"
            self.fail_streak = 0
        else:
            err = frozen.user_attrs.get("error") or "error"
            what = f"{err.splitlines()[0]}; log: {frozen.user_attrs.get('output_dir', '?')}/trial.log"
            self.fail_streak += 1
        tqdm.write(f"trial {frozen.number:4d} {state:8s} {what} | {params} | {secs:.1f}s")
        if self.bar is not None:
            self.bar.update()
        if self.fail_streak >= MAX_CONSECUTIVE_FAILURES:
            self.stop_reason = (f"{self.fail_streak} trials in a row failed (last: trial "
                                f"{frozen.number}); stopping the study: check its trial.log")
            study.stop()


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:4000]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ------------------------------------------------------------------ the end of a study
def pick_best(study: Any, spec: StudySpec) -> Any | None:
    """Single objective: the best trial. Multi: the Pareto trial best on the first objective."""
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        return None
    if not spec.multi:
        return study.best_trial
    sign = 1 if spec.directions[0] == "minimize" else -1
    return min(study.best_trials, key=lambda t: sign * t.values[0])


def write_best(best: Any, s: Settings, out: Path) -> tuple[Path, Path]:
    """``best_params.yaml`` (full config, best params applied) and ``best_overrides.txt``.

    The config is the study's base (``--config`` + overrides) with the best params; the
    preset's ``set`` lines are trial-only economies (no figures, fewer checkpoints) and are
    left out, so a final training run gets the usual outputs."""
    cfg: Config = load_config(s.config_path, [*s.overrides, *to_overrides(best.params)])
    vals = ", ".join(f"{o.label}={v:.6g}" for o, v in zip(s.spec.objectives, best.values))
    step = "train_cvae" if s.spec.trainer == "cvae" else "finetune_crps"
    header = (f"# precipgen tune: study '{s.study_name}', trial {best.number}: {vals}\n"
              f"# Full resolved config with the best params applied. Use it as is:\n"
              f"#   precipgen {step} --config best_params.yaml\n"
              f"# or add the lines of best_overrides.txt to your own command.\n"
              + (f"# Trial-only settings of the preset, not applied here: {', '.join(s.spec.set)}\n"
                 if s.spec.set else ""))
    out.mkdir(parents=True, exist_ok=True)
    yaml_path, txt_path = out / "best_params.yaml", out / "best_overrides.txt"
    yaml_path.write_text(header + cfg.to_yaml())
    txt_path.write_text("".join(f"--set {o}\n" for o in to_overrides(best.params)))
    return yaml_path, txt_path


def log_study(run: Any, study: Any, s: Settings, best: Any | None, out: Path) -> list[str]:
    """Best value/params, best_params.yaml, trials.csv and figures to the parent run.
    Returns notes about what could not be drawn."""
    import optuna

    from precipgen.plots import close
    from precipgen.plots import tune as plots_tune

    spec, notes = s.spec, []
    trials = study.get_trials(deepcopy=False)
    counts = {k: sum(t.state.name == k for t in trials) for k in ("COMPLETE", "PRUNED", "FAIL")}
    run.log_metrics({f"n_trials_{k.lower()}": v for k, v in counts.items()})
    if best is not None:
        run.log_metrics({f"best_{o.key}": v for o, v in zip(spec.objectives, best.values)})
        run.log_params({"best.trial_number": best.number,
                        **{f"best.{k}": v for k, v in best.params.items()}})
        run.set_tags({"tune.best_mlflow_run_id": best.user_attrs.get("mlflow_run_id", "")})
        for path in write_best(best, s, out):
            run.log_artifact(path)
    with contextlib.suppress(ImportError):  # pandas is optional for optuna
        df = study.trials_dataframe()
        (out / "trials.csv").write_text(df.to_csv(index=False))
        run.log_artifact(out / "trials.csv")

    first = spec.objectives[0]
    figs = {"figures/optimization_history.png": plots_tune.optimization_history(
        trials, first.label, first.direction)}
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if len(complete) >= 2:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = optuna.importance.get_param_importances(
                    study, target=(lambda t: t.values[0]) if spec.multi else None)
            figs["figures/param_importances.png"] = plots_tune.param_importances(imp, first.label)
            run.log_metrics({f"importance.{k}": v for k, v in imp.items()})
        except (ValueError, RuntimeError) as e:  # e.g. every trial had the same value
            notes.append(f"no parameter importances: {e}")
    else:
        notes.append(f"no parameter importances: {len(complete)} complete trial(s), need 2")
    figs["figures/parallel_coordinates.png"] = plots_tune.parallel_coordinates(
        trials, spec.params, first.label, first.direction)
    if spec.multi:
        front = study.best_trials
        labels = [o.label for o in spec.objectives]
        figs["figures/pareto_front.png"] = plots_tune.pareto_front(trials, front, labels)
        rows = [",".join(["trial", "mlflow_run_id", *labels, *(p.name for p in spec.params)])]
        for t in sorted(front, key=lambda t: t.values[0]):
            rows.append(",".join([str(t.number), t.user_attrs.get("mlflow_run_id", ""),
                                  *(f"{v:.6g}" for v in t.values),
                                  *(str(t.params.get(p.name, "")) for p in spec.params)]))
        (out / "pareto_front.csv").write_text("\n".join(rows) + "\n")
        run.log_artifact(out / "pareto_front.csv")
        run.log_metrics({"pareto_size": len(front)})
    for name, fig in figs.items():
        run.log_figure(fig, name)
        close(fig)
    return notes


# ------------------------------------------------------------------ the whole study
def trainer(s: Settings) -> Callable[..., tuple[str | None, Any]]:
    """The trainer a trial calls: ``train(cfg, run=, on_epoch_end=, register=)``."""
    if s.spec.trainer == "cvae":
        from precipgen.train import cvae

        return cvae.train
    import functools

    from precipgen.train import crps

    pretrained = crps.open_pretrained(s.pretrained)  # downloaded once, used by every trial
    return functools.partial(crps.finetune, pretrained=pretrained)


def run_study(s: Settings, requested_pruner: str | None = None) -> int:
    """Open (or join) the study, run ``s.n_trials`` trials as children of one MLflow run, log
    the best and the figures; the library form of ``precipgen tune``. Returns the exit code."""
    import optuna
    from tqdm.auto import tqdm

    base = s.spec.apply({}, s.config_path, s.overrides)
    epochs = int(_get(base, EPOCHS_KEY[s.spec.trainer]))
    root = Path(_get(base, OUTPUT_KEY[s.spec.trainer])) / "tune" / s.study_name
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is ours
    tracking.setup(tracking.EXPERIMENT)  # a bad tracking server fails before the study exists
    study = open_study(s, epochs)
    train_fn = trainer(s)
    before = len(study.trials)
    params: dict[str, Any] = {
        "study": s.spec.name, "study_name": s.study_name, "storage": safe_url(s.storage),
        "trainer": s.spec.trainer, "sampler": s.sampler, "pruner": s.pruner,
        "n_trials": s.n_trials, "timeout": s.timeout, "seed": s.seed, "space": s.spec.source,
        "objectives": ", ".join(f"{o.direction} {o.label}" for o in s.spec.objectives),
        **{f"space.{p.name}": _describe(p) for p in s.spec.params},
    }
    params = {k: v for k, v in params.items() if v is not None}
    tags = {"tune.study_name": s.study_name, "tune.trainer": s.spec.trainer}
    runner = TrialRunner(s, train_fn, root, epochs=epochs)
    if s.spec.multi and requested_pruner not in (None, "none"):
        print(f"tune: --pruner {requested_pruner} ignored: Optuna cannot prune multi-objective studies")
    print(f"tune {s.spec.name}: study '{s.study_name}' in {safe_url(s.storage)} "
          f"({before} trials so far), sampler {s.sampler}, pruner {s.pruner}, "
          f"{s.n_trials} trials x <= {epochs} epochs; trial outputs in {root}/")
    with tracking.start_run("tune", params=params, run_name=f"tune-{s.study_name}", tags=tags,
                            config_yaml=base.to_yaml()) as parent:
        parent.log_dict(s.spec.to_dict(), "tuning_space.yaml")
        with tqdm(total=s.n_trials, desc=f"tune {s.study_name}", unit="trial",
                  dynamic_ncols=True) as runner.bar:
            study.optimize(runner, n_trials=s.n_trials, timeout=s.timeout, catch=(TrialFailed,),
                           callbacks=[runner.after_trial])
        best = pick_best(study, s.spec)
        notes = log_study(parent, study, s, best, root)
        parent.log_metrics({"trial_epochs": runner.trial_epochs,
                            "trials_this_run": len(runner.numbers),
                            "seconds": time.perf_counter() - runner.started})
        print(summary_line(study, s, runner, best, root, notes) + f"\nMLflow run: {parent.url}")
    if runner.stop_reason:
        print(f"precipgen tune: error: {runner.stop_reason}")
        return 1
    return 0 if best is not None else 1


def summary_line(study: Any, s: Settings, r: TrialRunner, best: Any | None, root: Path,
                 notes: list[str]) -> str:
    mine = [t for t in study.get_trials(deepcopy=False) if t.number in set(r.numbers)]
    counts = ", ".join(f"{sum(t.state.name == k for t in mine)} {k}"
                       for k in ("COMPLETE", "PRUNED", "FAIL"))
    head = (f"tune {s.spec.name} done: {len(mine)} trials here ({counts}; {r.trial_epochs} "
            f"trial-epochs, {time.perf_counter() - r.started:.0f}s), {len(study.trials)} in "
            f"study '{s.study_name}'")
    if best is None:
        return head + "; no complete trial yet" + "".join(f"; {n}" for n in notes)
    vals = ", ".join(f"{o.label}={v:.6g}" for o, v in zip(s.spec.objectives, best.values))
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
    front = f"; Pareto front: {len(study.best_trials)} trials" if s.spec.multi else ""
    return (f"{head}; best {vals} (trial {best.number}: {params}){front}; "
            f"config: {root / 'best_params.yaml'}")


def _describe(p: Any) -> str:
    if p.type == "categorical":
        return f"categorical{list(p.choices)}"
    return f"{p.type}[{p.low:g}, {p.high:g}]{' log' if p.log else ''}"


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)
