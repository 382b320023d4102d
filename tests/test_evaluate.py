"""``precipgen evaluate`` on a tiny real pipeline (prepare -> pretrain_vae -> finetune_crps ->
train_cvae -> sample, built once for the module against the real MLflow server): console
sections, report files, metrics and lineage in MLflow, the augmentation arms, and clear errors."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from precipgen.cli import main

TINY_VAE = ["--set", "vae3d.base_filters=4", "--set", "vae3d.latent_channels=2",
            "--set", "vae3d.max_batches_per_epoch=3", "--set", "finetune.max_batches_per_epoch=3"]
TINY_CVAE = ["--set", "model.d_z=4", "--set", "model.base_filters=4", "--set", "model.d_x=8",
             "--set", "model.d_y=8", "--set", "train.max_batches_per_epoch=2",
             "--set", "train.val_samples=2", "--set", "train.figure_interval=0"]
TINY_SRDRN = ["--set", "srdrn.filters=4", "--set", "srdrn.res_blocks=1", "--set", "srdrn.epochs=1",
              "--set", "srdrn.batch_size=8"]
SEED_SECTIONS = [
    "🎯 Testing DETERMINISTIC model...", "📊 Deterministic outputs variance:",
    "🎯 Is deterministic: True", "🎨 Testing GENERATIVE model...",
    "📊 Generative outputs max variance:", "🎲 Testing ENSEMBLE UNCERTAINTY",
    "📊 Ensemble shape: (4, 12, 1, 24, 24)", "📊 Mean prediction range:",
    "📊 Uncertainty range:", "📊 Average uncertainty:", "🎯 Comparing CRPS LOSS",
    "📊 Deterministic CRPS:", "📊 Generative CRPS:", "Generative model variance:",
    "Diversity score:", "CRPS improvement:",
]


def call(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(list(argv))
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def pipeline(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("pipeline")
    data = str(root / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        steps = [
            ["prepare", "--source", "synthetic", "--days", "80", "--height", "24", "--width", "24",
             "--factor", "4", "--output", data],
            ["pretrain_vae", "--data", data, "--epochs", "1", "--window_days", "4",
             "--output_dir", str(root / "pre"), *TINY_VAE],
            ["finetune_crps", "--data", data, "--epochs", "1", "--crps_samples", "4", "--lr", "1e-3",
             "--output_dir", str(root / "ft"), *TINY_VAE],
            ["train_cvae", "--data", data, "--epochs", "1", "--batch_size", "4",
             "--output_dir", str(root / "cvae"), *TINY_CVAE],
            ["sample", "--data", data, "--K", "2", "--days", "heavy_only", "--min_threshold", "0",
             "--output", str(root / "synth"), "--batch_size", "4", "--seed", "1"],
        ]
        for argv in steps:
            rc, out = call(*argv)
            assert rc == 0, f"{argv[0]} failed:\n{out}"
        # the val split: the tiny test split has no pixel above P95 (tail scores would be NaN)
        rc, out = call("evaluate", "--data", data, "--num_samples", "4", "--split", "val",
                       "--report_dir",
                       str(root / "reports"), "--run_name", "eval-tiny", "--augmentation",
                       "--samples", str(root / "synth"), "--bootstrap", "50", "--verbose",
                       "--set", f"srdrn.output_dir={root / 'srdrn'}", *TINY_SRDRN)
        assert rc == 0, out
    return {"root": root, "data": data, "out": out, "report": root / "reports" / "eval-tiny",
            "client": MlflowClient(mlflow_server), "server": mlflow_server}


def eval_run(p: dict):
    c = p["client"]
    (run,) = c.search_runs([c.get_experiment_by_name("precipgen").experiment_id],
                           filter_string="attributes.run_name = 'eval-tiny'")
    return run


def test_console_keeps_the_seed_sections(pipeline):
    out = pipeline["out"]
    for line in SEED_SECTIONS:
        assert line in out, line
    assert re.search(r"📊 Improvement: -?\d+\.\d\d%", out)
    assert "🧪 Does AUGMENTATION help?" in out
    assert "🎨 Testing cVAE (from X alone)..." in out and "Oracle CRPS" in out
    # success indicators are printed with pass/fail marks, one line each
    assert len(re.findall(r"^[✅❌] (Generative model variance|Diversity score|CRPS improvement|"
                          r"Uncertainty):", out, flags=re.M)) == 4


def test_report_files(pipeline):
    rep = pipeline["report"]
    md, page = (rep / "report.md").read_text(), (rep / "report.html").read_text()
    figs = re.findall(r"\]\((figures/[\w]+\.png)\)", md)
    names = {Path(f).stem for f in figs}
    assert {"heavy_days", "std_map", "rank_histogram", "spread_skill", "reliability", "spectra",
            "fss", "qq", "training_curves"} <= names
    for f in figs:
        assert (rep / f).stat().st_size > 1000
    assert page.count("data:image/png;base64,") == len(figs) and 'src="figures/' not in page
    assert "🎯 Comparing CRPS LOSS" in md and "| gen_CRPS" not in md  # table by model columns
    # the verdict box leads: before the header table, each criterion with threshold and result
    assert md.index("Verdict:") < md.index("| item | value |") < md.index("🎯 Comparing CRPS")
    assert "| criterion | value | threshold | units | result | basis |" in md
    assert "generative CRPS / oracle CRPS" in md and "seed: CRPS improvement" in md
    assert "class='verdict'" in page and page.index("Verdict:") < page.index("<h2>Figures")
    assert "| CRPS | mm/day | lower |" in md  # score tables say units and better direction
    ev = json.loads((rep / "evaluation.json").read_text())
    m = ev["metrics"]
    assert m["det_CRPS"] == pytest.approx(m["det_MAE_all"])  # a point forecast's CRPS is its MAE
    assert m["gen_oracle_ratio"] == pytest.approx(m["gen_CRPS"] / m["oracle_CRPS"])
    assert len(ev["curves"]["gen"]["rank_histogram"]) == 5  # m + 1 bins
    assert ev["curves"]["gen"]["fss_P95"]["scales"] == list(range(1, 33))
    assert {k.split("_seed")[0] for k in ev["augmentation"]["run_ids"]} == {"real", "augmented"}
    names = [c["criterion"] for c in ev["verdict"]]
    assert "augmentation: heavy-day MAE_tail reduction" in names
    assert all(c["result"] in ("PASS", "FAIL") for c in ev["verdict"])


def test_ensemble_nc_is_cf(pipeline):
    import xarray as xr
    from conftest import cf_failures

    path = pipeline["report"] / "ensemble.nc"
    ev = json.loads((pipeline["report"] / "evaluation.json").read_text())
    with xr.open_dataset(path) as nc:
        assert nc.attrs["Conventions"] == "CF-1.10" and ev["run_id"] in nc.attrs["source"]
        assert nc["generative_members"].dims == ("realization", "time", "y", "x")
        assert nc.sizes["realization"] == 4 and nc.sizes["time"] == len(ev["days"])
        assert {"truth", "deterministic", "cvae_members", "oracle_members"} <= set(nc.data_vars)
        assert nc["truth"].attrs["units"] == "mm day-1"
    assert cf_failures(path) == []


def test_metrics_and_lineage_in_mlflow(pipeline):
    run = eval_run(pipeline)
    m, tags = run.data.metrics, run.data.tags
    for key in ("det_CRPS", "gen_CRPS", "gen_CRPS_fair", "gen_CRPS_standard", "gen_twCRPS_P95",
                "crps_improvement_pct", "gen_spread_skill", "gen_rank_reliability_index",
                "gen_brier_P95", "gen_brier_P99", "gen_mass_bias", "gen_spectral_ratio",
                "gen_P99_bias", "gen_wet_frequency", "gen_SDII", "oracle_CRPS", "gen_MAE_tail",
                "gen_FSS_P95_4px", "det_FSS_P99_1px",
                "gen_oracle_ratio", "det_oracle_ratio", "cvae_CRPS", "cvae_spread_skill",
                "is_deterministic", "is_generative", "success_all", "aug_all_diff_MAE_all"):
        assert key in m, key
    assert m["is_deterministic"] == 1.0
    assert m["det_output_max_variance"] < 1e-6 < m["gen_output_max_variance"]
    assert m["oracle_CRPS"] < m["det_CRPS"]  # the oracle is the best possible forecast
    assert 0.6 < m["oracle_spread_skill"] < 1.5  # exact samples are calibrated
    assert m["oracle_rank_reliability_index"] < m["gen_rank_reliability_index"] + 0.5
    c = pipeline["client"]
    assert tags["upstream.deterministic_run_id"] == c.get_model_version_by_alias(
        "vae3d-deterministic", "latest").run_id
    assert tags["upstream.generative_run_id"] == c.get_model_version_by_alias(
        "vae3d-crps", "latest").run_id
    assert tags["upstream.cvae_run_id"] == c.get_model_version_by_alias("cvae", "latest").run_id
    assert "upstream.synthetic_run_id" in tags and "upstream.dataset_run_id" in tags
    assert tags["mlflow.note.content"].startswith("**Verdict: ")  # the run's description
    arts = {a.path for a in c.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/evaluation.json"} <= arts
    curve = c.get_metric_history(run.info.run_id, "gen_FSS_P95_curve")
    assert sorted(p.step for p in curve) == list(range(1, 33))


def test_augmentation_arms_are_nested_runs(pipeline):
    run = eval_run(pipeline)
    c = pipeline["client"]
    kids = c.search_runs([run.info.experiment_id],
                         filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert {k.info.run_name.split("_seed")[0] for k in kids} == {"srdrn-augmented", "srdrn-real"}
    assert all("test_MAE_all" in k.data.metrics for k in kids)


def test_missing_model_is_a_clear_error(sqlite_tracking, pipeline, capsys):
    assert main(["evaluate", "--data", pipeline["data"], "--num_samples", "2"]) == 2
    err = capsys.readouterr().err
    assert "models:/vae3d-deterministic@latest" in err and "pretrain_vae" in err
    assert main(["evaluate", "--data", pipeline["data"], "--deterministic",
                 str(pipeline["root"] / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_paths_work_and_a_missing_cvae_is_skipped(sqlite_tracking, pipeline, tmp_path):
    root = pipeline["root"]
    det = next((root / "pre").glob("*/checkpoints/model_best.pt"))
    gen = next((root / "ft").glob("*/checkpoints/best_model.pth"))
    rc, out = call("evaluate", "--data", pipeline["data"], "--deterministic", str(det),
                   "--generative", str(gen), "--num_samples", "2", "--max_days", "4",
                   "--report_dir", str(tmp_path), "--run_name", "paths")
    assert rc == 0, out
    lines = out.strip().splitlines()
    assert len(lines) <= 15 and lines[0].startswith("verdict: "), out  # not the seed's dump
    assert "🎯 Testing DETERMINISTIC model..." not in out
    ev = json.loads((tmp_path / "paths" / "evaluation.json").read_text())
    assert any(n.startswith("cVAE skipped") for n in ev["notes"])
    assert "cvae_CRPS" not in ev["metrics"] and np.isfinite(ev["metrics"]["gen_CRPS"])
    assert len(ev["days"]) == 4


def test_rare_event_notes_flag_thresholds_almost_never_reached(tmp_path):
    from helpers import make_prepared

    from precipgen.data.store import PreparedDataset
    from precipgen.evaluation.compare import rare_event_notes

    ds = PreparedDataset.open(make_prepared(tmp_path, days=64, seed=3))
    land_mean = np.asarray(ds.Y_hr)[:, 0][:, ds.land_mask].mean(axis=1)
    driest = np.array([int(np.argmin(land_mean))])
    n99 = int((np.asarray(ds.Y_hr[driest])[:, 0][:, ds.land_mask] >= ds.thresholds["P99"]).sum())
    notes = rare_event_notes(ds, driest)
    assert any(f"only {n99} truth pixels of the split reach P99" in n for n in notes)
    assert rare_event_notes(ds, np.arange(ds.n_days)) == []  # 64 days: plenty of events


def test_models_score_on_another_dataset_and_misfits_are_refused(sqlite_tracking, pipeline,
                                                                 tmp_path, capsys):
    """`evaluate --data OTHER`: another period of the generator (other seed) scores with the
    models' own normalisation; another grid or other units are refused, naming both."""
    root = pipeline["root"]
    det = str(next((root / "pre").glob("*/checkpoints/model_best.pt")))
    gen = str(next((root / "ft").glob("*/checkpoints/best_model.pth")))
    other = tmp_path / "other"
    assert main(["prepare", "--source", "synthetic", "--days", "60", "--height", "24", "--width",
                 "24", "--factor", "4", "--seed", "9", "--output", str(other)]) == 0
    rc, out = call("evaluate", "--data", str(other), "--deterministic", det, "--generative", gen,
                   "--num_samples", "2", "--max_days", "4", "--report_dir", str(tmp_path),
                   "--run_name", "on-other", "--augmentation", "--skip_augmentation")
    assert rc == 0, out
    ev = json.loads((tmp_path / "on-other" / "evaluation.json").read_text())
    assert ev["header"]["dataset"] == str(other.resolve()) or ev["header"]["dataset"] == str(other)
    assert "aug_all_diff_MAE_all" not in ev["metrics"]  # --skip_augmentation wins
    # a report never replaces a directory that is not a report (here: the dataset)
    assert main(["evaluate", "--data", str(other), "--deterministic", det, "--generative", gen,
                 "--num_samples", "2", "--max_days", "2", "--report_dir", str(tmp_path),
                 "--run_name", "other"]) == 2
    assert "is not an evaluation report" in capsys.readouterr().err
    assert (other / "metadata" / "channels.json").exists()
    capsys.readouterr()
    wide = tmp_path / "wide"
    assert main(["prepare", "--source", "synthetic", "--days", "60", "--height", "24", "--width",
                 "32", "--factor", "4", "--output", str(wide)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--data", str(wide), "--deterministic", det, "--generative", gen,
                 "--num_samples", "2"]) == 2
    err = capsys.readouterr().err
    assert "expects (channels, low-res grid, high-res grid)" in err and str(wide) in err
    norm = json.loads((other / "metadata" / "normalization.json").read_text())
    norm["units"] = "mm/h"
    (other / "metadata" / "normalization.json").write_text(json.dumps(norm))
    assert main(["evaluate", "--data", str(other), "--deterministic", det, "--generative", gen,
                 "--num_samples", "2"]) == 2
    assert "predicts precipitation in mm/day" in capsys.readouterr().err
