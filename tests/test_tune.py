"""``precipgen tune``: nested MLflow runs per trial against a real server, best_params.yaml,
pruning of a scripted bad curve, FAIL trials, multi-objective Pareto front, and two worker
processes sharing one study on the PostgreSQL at 127.0.0.1:5432."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import REPO
from helpers import make_prepared
from mlflow.tracking import MlflowClient

from precipgen.cli import main
from precipgen.config import ConfigError, load_config
from precipgen.tuning.space import Objective, load_space
from precipgen.tuning.study import pruning_callback


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("tune_data"))


def tiny(prepared: Path, out: Path, epochs: int = 2) -> list[str]:
    sets = [f"data.path={prepared}", "model.d_z=8", "model.base_filters=8", "model.d_x=16",
            "model.d_y=32", "train.batch_size=4", "train.max_batches_per_epoch=2",
            "train.val_samples=2", "loss.warmup_epochs=1", f"train.epochs={epochs}",
            f"train.output_dir={out}"]
    return [a for s in sets for a in ("--set", s)]


def runs_of(client: MlflowClient, study_name: str) -> tuple[list, list]:
    exp = client.get_experiment_by_name("precipgen")
    runs = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`tune.study_name` = '{study_name}'")
    parents = [r for r in runs if r.data.tags["precipgen.entry_point"] == "tune"]
    children = [r for r in runs if r.data.tags["precipgen.entry_point"] == "tune_trial"]
    return parents, children


def artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


@pytest.mark.slow
def test_four_trial_study_logs_parent_children_and_best_params(tracking_server, prepared, tmp_path,
                                                              capsys):
    name, storage = f"t4-{uuid.uuid4().hex[:8]}", f"sqlite:///{tmp_path / 'optuna.db'}"
    assert main(["tune", "--study", "cvae", "--n_trials", "4", "--study_name", name,
                 "--storage", storage, "--seed", "3", *tiny(prepared, tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count(" COMPLETE ") == 4 and "tune cvae done: 4 trials here" in out
    assert f"MLflow run: {tracking_server}" in out

    client = MlflowClient(tracking_server)
    (parent,), children = runs_of(client, name)
    assert len(children) == 4
    pid = parent.info.run_id
    study = optuna.load_study(study_name=name, storage=storage)
    by_number = {t.number: t for t in study.trials}
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == pid
        assert tags["tune.state"] == "COMPLETE" and child.info.status == "FINISHED"
        number = int(tags["tune.trial_number"])
        trial = by_number[number]
        assert trial.user_attrs["mlflow_run_id"] == child.info.run_id
        # params = the trial's; per-epoch metrics landed in the CHILD run
        assert float(child.data.params["loss.lambda_ext"]) == pytest.approx(
            trial.params["loss.lambda_ext"])
        hist = client.get_metric_history(child.info.run_id, "val_MAE_tail")
        assert sorted(m.step for m in hist) == [1, 2]
        assert child.data.metrics["objective_val_MAE_tail"] == pytest.approx(trial.value)
        assert Path(trial.user_attrs["output_dir"]).name == f"trial_{number:04d}"
        assert "trial.log" in artifacts(client, child.info.run_id)
    assert sorted(int(c.data.tags["tune.trial_number"]) for c in children) == [0, 1, 2, 3]
    assert "val_MAE_tail" not in parent.data.metrics  # the parent only holds the summary
    # trials do not register models
    assert not any(v.run_id in {c.info.run_id for c in children}
                   for v in client.search_model_versions("name='cvae'"))

    best = study.best_trial
    assert parent.data.metrics["best_val_MAE_tail"] == pytest.approx(best.value)
    assert parent.data.params["best.loss.beta_kl"] == str(best.params["loss.beta_kl"])
    assert parent.data.tags["tune.best_mlflow_run_id"] == best.user_attrs["mlflow_run_id"]
    assert {"best_params.yaml", "best_overrides.txt", "trials.csv", "config.yaml",
            "tuning_space.yaml", "figures"} <= artifacts(client, pid)
    assert {"figures/optimization_history.png", "figures/param_importances.png",
            "figures/parallel_coordinates.png"} <= artifacts(client, pid, "figures")

    # best_params.yaml: a full config, loadable as --config, with the best params applied
    local = tmp_path / "out" / "tune" / name / "best_params.yaml"
    cfg = load_config(local)
    assert cfg.loss.lambda_ext == pytest.approx(best.params["loss.lambda_ext"])
    assert cfg.loss.beta_kl == pytest.approx(best.params["loss.beta_kl"])
    assert cfg.model.d_z == 8 and cfg.train.output_dir == str(tmp_path / "out")
    lines = (local.parent / "best_overrides.txt").read_text().split("\n")
    assert lines[0].startswith("--set loss.lambda_ext=")
    assert load_config(None, [ln.split(" ", 1)[1] for ln in lines if ln]).loss.beta_kl == \
        pytest.approx(best.params["loss.beta_kl"])


def test_pruning_callback_prunes_a_scripted_bad_curve():
    """Real Optuna study (in memory) + MedianPruner; the objective feeds scripted learning
    curves through the callback the trainers call every epoch."""
    curves = [[1.0, 0.8, 0.6, 0.5], [1.1, 0.9, 0.7, 0.6], [1.2, 0.85, 0.65, 0.55],
              [3.0, 2.9, 2.8, 2.7],  # bad from the start: pruned at epoch 1
              [0.9, 0.7, 0.5, 0.4]]  # better than the median at every epoch
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
    obj = Objective("val_MAE_tail")

    def objective(trial: optuna.Trial) -> float:
        report = pruning_callback(trial, obj)
        for epoch, v in enumerate(curves[trial.number], start=1):
            report(epoch, {"val_MAE_tail": v, "val_loss": 0.0}, None)
        return curves[trial.number][-1]

    study.optimize(objective, n_trials=len(curves))
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    assert list(study.trials[3].intermediate_values) == [1]  # stopped early: epoch 1 only
    assert study.trials[3].user_attrs["epochs_run"] == 1
    assert list(study.trials[4].intermediate_values) == [1, 2, 3, 4]

    # a NaN objective fails the trial; a misspelt metric is a config error naming the closest
    trial = study.ask()
    with pytest.raises(FloatingPointError, match="nan at epoch 2"):
        pruning_callback(trial, obj)(2, {"val_MAE_tail": math.nan}, None)
    with pytest.raises(ConfigError, match="did you mean 'val_MAE_tail'"):
        pruning_callback(trial, Objective("val_MAE_tial"))(1, {"val_MAE_tail": 1.0}, None)
    abs_obj = Objective("val_mass_bias", transform="abs")
    pruning_callback(trial, abs_obj)(1, {"val_mass_bias": -0.25}, None)
    assert study.trials[-1].intermediate_values == {1: 0.25}


def test_space_errors_name_the_key(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump({
        "trainer": "cvae", "objectives": ["val_MAE_tail"],
        "params": [{"name": "loss.lamda_ext", "type": "float", "low": 1, "high": 20}]}))
    with pytest.raises(ConfigError, match=r"loss.lamda_ext.*did you mean 'lambda_ext'"):
        load_space(space)
    space.write_text(yaml.safe_dump({
        "trainer": "cvae", "objectives": ["val_MAE_tail"],
        "params": [{"name": "model.d_z", "type": "float", "low": 4, "high": 8.5}]}))
    with pytest.raises(ConfigError, match="model.d_z.*expected int"):
        load_space(space)
    space.write_text(yaml.safe_dump({
        "trainer": "cvae", "objectives": ["val_MAE_tail"],
        "params": [{"name": "loss.beta_kl", "type": "float", "low": 0, "high": 1, "lgo": True}]}))
    with pytest.raises(ConfigError, match="param 'loss.beta_kl': unknown key 'lgo'"):
        load_space(space)
    for preset in sorted((REPO / "tuning").glob("*.yaml")):
        assert load_space(preset).params, preset


@pytest.mark.slow
def test_failing_trial_is_fail_and_the_study_goes_on(tracking_server, prepared, tmp_path, capsys):
    """Trial 1 asks for a batch larger than the validation split: the real trainer raises."""
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "failing", "trainer": "cvae", "objectives": [{"metric": "val_MAE_tail"}],
        "params": [{"name": "loss.lambda_ext", "type": "float", "low": 1, "high": 20, "log": True},
                   {"name": "train.batch_size", "type": "categorical", "choices": [4, 48]}],
        "pruner": "none", "set": ["train.figure_interval=0"]}))
    name, storage = f"fail-{uuid.uuid4().hex[:8]}", f"sqlite:///{tmp_path / 'optuna.db'}"
    pre = optuna.create_study(study_name=name, storage=storage)  # enqueue, then resume it
    for bs in (4, 48, 4):
        pre.enqueue_trial({"loss.lambda_ext": 3.0, "train.batch_size": bs})
    assert main(["tune", "--space", str(space), "--n_trials", "3", "--study_name", name,
                 "--storage", storage, *tiny(prepared, tmp_path / "out", epochs=1)]) == 0
    out = capsys.readouterr().out
    assert "FAIL     ValueError: batch size 48 is larger than the train split" in out
    study = optuna.load_study(study_name=name, storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    client = MlflowClient(tracking_server)
    _, children = runs_of(client, name)
    failed = [c for c in children if c.data.tags["tune.state"] == "FAIL"]
    assert len(children) == 3 and len(failed) == 1
    assert failed[0].info.status == "FAILED"
    assert "batch size 48" in failed[0].data.tags["tune.error"]
    assert failed[0].info.run_id == study.trials[1].user_attrs["mlflow_run_id"]
    assert "Traceback" in (Path(study.trials[1].user_attrs["output_dir"]) / "trial.log").read_text()


@pytest.mark.slow
def test_multi_objective_study_logs_a_pareto_front(tracking_server, prepared, tmp_path, capsys):
    name, storage = f"mo-{uuid.uuid4().hex[:8]}", f"sqlite:///{tmp_path / 'optuna.db'}"
    assert main(["tune", "--study", "cvae_pareto", "--n_trials", "3", "--study_name", name,
                 "--storage", storage, "--seed", "0", "--pruner", "median",
                 *tiny(prepared, tmp_path / "out", epochs=1)]) == 0
    out = capsys.readouterr().out
    assert "ignored: Optuna cannot prune multi-objective" in out and "Pareto front:" in out
    client = MlflowClient(tracking_server)
    (parent,), children = runs_of(client, name)
    assert len(children) == 3
    study = optuna.load_study(study_name=name, storage=storage)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    for t in study.trials:  # second objective is |val_mass_bias| of the child run
        child = client.get_run(t.user_attrs["mlflow_run_id"])
        assert t.values[1] == pytest.approx(abs(child.data.metrics["val_mass_bias"]), rel=1e-6)
    pid = parent.info.run_id
    assert "figures/pareto_front.png" in artifacts(client, pid, "figures")
    assert {"pareto_front.csv", "best_params.yaml"} <= artifacts(client, pid)
    assert parent.data.metrics["pareto_size"] == len(study.best_trials)


def test_cli_pruner_and_sampler_choices():
    """``--pruner none`` is a choice (not 'not given'); '' (MLproject) falls back to the preset."""
    from precipgen.cli import build_parser
    from precipgen.steps.tune import settings_from_args
    from precipgen.tuning.study import make_pruner, make_sampler

    def settings(*extra: str):
        return settings_from_args(build_parser("tune").parse_args(["tune", *extra]))

    s = settings("--pruner", "none", "--n_trials", "12.0", "--seed", "")
    assert s.pruner == "none" and s.n_trials == 12 and s.seed is None
    assert isinstance(make_pruner(s, 8), optuna.pruners.NopPruner)
    s = settings("--pruner", "", "--sampler", "")
    assert isinstance(make_pruner(s, 8), optuna.pruners.MedianPruner)
    assert isinstance(make_sampler(s), optuna.samplers.TPESampler)
    s = settings("--pruner", "hyperband", "--study", "cvae")
    assert isinstance(make_pruner(s, 8), optuna.pruners.HyperbandPruner)
    s = settings("--study", "cvae_pareto")
    assert s.pruner == "none" and isinstance(make_sampler(s), optuna.samplers.NSGAIISampler)
    with pytest.raises(ConfigError, match="did you mean 'cvae_pareto'"):
        settings("--study", "cvae_paretto")
