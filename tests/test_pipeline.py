"""`precipgen main`: every step a child run of one parent; a re-run reuses unchanged steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient

STEPS = ["prepare", "pretrain_vae", "finetune_crps", "train_cvae", "sample", "evaluate"]


@pytest.mark.slow
def test_main_runs_every_step_as_child_runs_then_reuses_them(tracking_server: str, tmp_path: Path):
    root = tmp_path / "pipe"
    args = ["main", "--profile", "tiny", "--output_root", str(root),
            "--report_dir", str(tmp_path / "reports")]
    first = run_cli(*args, timeout=900)
    assert "6 steps (0 reused)" in first.stdout

    client = MlflowClient(tracking_server)
    exp = client.get_experiment_by_name("precipgen")
    parents = client.search_runs([exp.experiment_id], "tags.`precipgen.entry_point` = 'main'")
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_entry = {c.data.tags.get("precipgen.entry_point"): c for c in children}
    assert set(STEPS) <= set(by_entry), sorted(by_entry)
    assert all(by_entry[s].info.status == "FINISHED" for s in STEPS)
    # lineage: finetune_crps consumed pretrain_vae's model, evaluate all three models
    pre_id = by_entry["pretrain_vae"].info.run_id
    assert by_entry["finetune_crps"].data.tags["upstream.pretrained_run_id"] == pre_id
    assert by_entry["evaluate"].data.tags["upstream.deterministic_run_id"] == pre_id
    assert parent.data.tags["step.evaluate_run_id"] == by_entry["evaluate"].info.run_id
    # the SRDRN arms are children of the evaluate run, not re-openings of it
    eval_id = by_entry["evaluate"].info.run_id
    arms = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{eval_id}'")
    assert sorted(a.data.tags["precipgen.entry_point"] for a in arms) == [
        "augmentation_augmented", "augmentation_real"]
    assert (root / "prepared" / "metadata" / "provenance.json").exists()
    assert (tmp_path / "reports" / "evaluate-tiny" / "report.html").exists()

    second = run_cli(*args, timeout=900)
    assert "6 steps (6 reused" in second.stdout
    for step in STEPS:
        assert f"{step}: reusing finished run {by_entry[step].info.run_id}" in second.stdout


def test_step_key_changes_with_arguments_and_profile():
    """Any change of a step's arguments (they name the upstream run ids) or profile re-runs it."""
    from precipgen.pipeline import Step, _step_key

    a = Step("prepare", ["prepare", "--days", "10"])
    assert _step_key(a, "tiny") == _step_key(Step("prepare", ["prepare", "--days", "10"]), "tiny")
    assert _step_key(a, "tiny") != _step_key(Step("prepare", ["prepare", "--days", "11"]), "tiny")
    assert _step_key(a, "tiny") != _step_key(a, "quick")
