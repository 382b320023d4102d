"""Evaluation reports: ``report.md`` (figures as PNG files beside it), ``report.html`` (figures
embedded as base64 PNG: one self-contained file) and ``evaluation.json`` (every number)."""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from precipgen.data import cf
from precipgen.data.store import AtomicDir, write_json
from precipgen.evaluation import verdict as verdict_

MODEL_PREFIXES = ("det", "gen", "cvae", "oracle")
PREFIX_NAMES = {"det": "deterministic", "gen": "generative", "cvae": "cVAE", "oracle": "oracle"}


@dataclass
class ReportFigure:
    name: str  # file stem, e.g. "rank_histogram"
    title: str
    figure: Figure
    caption: str = ""


@dataclass
class Report:
    title: str
    header: dict[str, Any]  # what was evaluated: models, URIs, run ids, data, split
    metrics: dict[str, float]
    figures: list[ReportFigure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    console: str = ""  # the console sections, reproduced verbatim
    verdict: list[verdict_.Criterion] = field(default_factory=list)  # the box at the top
    units: str = ""  # of precipitation, for the score tables


def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            return "n/a"
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return str(v)


def split_metrics(metrics: dict[str, float]) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """``{score: {prefix: value}}`` for per-model metrics, and the rest."""
    table: dict[str, dict[str, float]] = {}
    rest: dict[str, float] = {}
    for k, v in sorted(metrics.items()):
        prefix, _, name = k.partition("_")
        if prefix in MODEL_PREFIXES and name:
            table.setdefault(name, {})[prefix] = v
        else:
            rest[k] = v
    return table, rest


def _md_table(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _html_table(rows: list[list[str]]) -> str:
    head, *body = rows
    th = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


# score name -> (units, better); "U" = the precipitation units, "" = dimensionless
SCORE_INFO: dict[str, tuple[str, str]] = {
    "CRPS": ("U", "lower"), "CRPS_fair": ("U", "lower"), "CRPS_standard": ("U", "lower"),
    "twCRPS_P95": ("U", "lower"), "twCRPS_P99": ("U", "lower"), "MAE_all": ("U", "lower"),
    "MAE_tail": ("U", "lower"), "RMSE_all": ("U", "lower"), "rmse_ens_mean": ("U", "lower"),
    "spread": ("U", "match rmse"), "spread_skill": ("", "closer to 1"),
    "rank_pvalue": ("", "higher (flat)"), "rank_chi2": ("", "lower"),
    "rank_reliability_index": ("", "lower"), "brier_P95": ("", "lower"),
    "brier_P99": ("", "lower"), "bss_P95": ("", "higher"), "bss_P99": ("", "higher"),
    "P95_bias": ("U", "closer to 0"), "P99_bias": ("U", "closer to 0"),
    "max_bias": ("U", "closer to 0"), "mass_bias": ("fraction", "closer to 0"),
    "wet_frequency": ("fraction", "match truth"), "wet_frequency_bias": ("fraction", "closer to 0"),
    "SDII": ("U", "match truth"), "SDII_bias": ("U", "closer to 0"),
    "spectral_ratio": ("", "closer to 1"), "spatial_corr": ("", "higher"),
    "oracle_ratio": ("", "closer to 1"), "uncertainty": ("U", ""),
}


def score_info(name: str, units: str) -> tuple[str, str]:
    info = SCORE_INFO.get(name)
    if info is None and name.startswith("FSS_"):
        info = ("", "higher")
    u, better = info or ("", "")
    return (units if u == "U" else u), better


def tables(metrics: dict[str, float], units: str = "") -> list[tuple[str, list[list[str]]]]:
    per_model, rest = split_metrics(metrics)
    present = [p for p in MODEL_PREFIXES if any(p in row for row in per_model.values())]
    t1 = [["score", "units", "better", *[PREFIX_NAMES[p] for p in present]]]
    t1 += [[name, *score_info(name, units), *[fmt(row.get(p, float("nan"))) for p in present]]
           for name, row in per_model.items()]
    t2 = [["metric", "value"]] + [[k, fmt(v)] for k, v in rest.items()]
    return [("Scores per model", t1), ("Comparisons, indicators and experiments", t2)]


def write_report(out_dir: Path, report: Report, evaluation: dict[str, Any]) -> dict[str, Path]:
    """Write figures, ``report.md``, ``report.html`` and ``evaluation.json`` into ``out_dir``.

    Written into a temporary sibling and renamed, so a re-run never leaves a mix of old and new
    figures, and a failure leaves the previous report intact."""
    final = Path(out_dir)
    if final.is_dir() and any(final.iterdir()) and not (final / "evaluation.json").exists():
        # a re-run replaces its own report, never a directory that holds something else
        raise FileExistsError(f"report directory {final} exists and is not an evaluation "
                              "report; choose another --run_name or --report_dir")
    with AtomicDir(final, overwrite=True) as tmp:
        written = _write_files(tmp, report, evaluation)
    return {k: final / v.relative_to(tmp) for k, v in written.items()}


def _write_files(out_dir: Path, report: Report, evaluation: dict[str, Any]) -> dict[str, Path]:
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, Path] = {}
    for f in report.figures:
        path = fig_dir / f"{f.name}.png"
        f.figure.savefig(path, dpi=100)
        pngs[f.name] = path

    header_rows = [["item", "value"]] + [[k, fmt(v)] for k, v in report.header.items()]
    box = [verdict_.HEADER, *[c.row() for c in report.verdict]]
    md = [f"# {report.title}", ""]
    if report.verdict:
        md += [f"> **Verdict: {verdict_.summary_line(report.verdict)}**", "", _md_table(box), ""]
    md += [_md_table(header_rows), ""]
    if report.notes:
        md += ["## Notes", "", *[f"- {n}" for n in report.notes], ""]
    if report.console:
        md += ["## The seed's diagnostic printout", "", "```", report.console.rstrip(), "```", ""]
    md += ["## Figures", ""]
    for f in report.figures:
        md += [f"### {f.title}", "", f"![{f.title}](figures/{f.name}.png)", ""]
        if f.caption:
            md += [f.caption, ""]
    for title, rows in tables(report.metrics, report.units):
        md += [f"## {title}", "", _md_table(rows), ""]
    (out_dir / "report.md").write_text("\n".join(md))

    body = [f"<h1>{html.escape(report.title)}</h1>"]
    if report.verdict:
        body += ["<div class='verdict'><h2>Verdict: "
                 f"{html.escape(verdict_.summary_line(report.verdict))}</h2>",
                 _html_table(box), "</div>"]
    body += [_html_table(header_rows)]
    if report.notes:
        body += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in report.notes]
        body += ["</ul>"]
    if report.console:
        body += ["<h2>The seed's diagnostic printout</h2>",
                 f"<pre>{html.escape(report.console)}</pre>"]
    body += ["<h2>Figures</h2>"]
    for f in report.figures:
        b64 = base64.b64encode(pngs[f.name].read_bytes()).decode()
        body += [f"<h3>{html.escape(f.title)}</h3>",
                 f'<img alt="{html.escape(f.title)}" src="data:image/png;base64,{b64}">']
        if f.caption:
            body += [f"<p>{html.escape(f.caption)}</p>"]
    for title, rows in tables(report.metrics, report.units):
        body += [f"<h2>{html.escape(title)}</h2>", _html_table(rows)]
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:"
             "collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
             "img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow-x:auto}"
             ".verdict{border:2px solid #444;padding:0 1em;margin:1em 0;background:#fafafa}")
    (out_dir / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}"
        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
    write_json(out_dir / "evaluation.json", _finite(evaluation))
    return {"md": out_dir / "report.md", "html": out_dir / "report.html",
            "json": out_dir / "evaluation.json", **{f"fig_{k}": v for k, v in pngs.items()}}


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalar
        return _finite(obj.item())
    return obj


def load_evaluation(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def write_evaluation(r: Any, report_dir: Path, run_name: str, models: dict[str, Any],
                     ds: Any, days: np.ndarray, split: str, m: int, seed: int,
                     ev: dict[str, Any], metrics: dict[str, float],
                     histories: dict[str, dict[str, list]], notes: list[str],
                     console_text: str, aug: dict[str, Any] | None,
                     figures: list[ReportFigure],
                     found: list[verdict_.Criterion] | None = None) -> None:
    """The evaluation's report directory (report.md/.html, evaluation.json, figures), logged
    to run ``r`` under ``report/``."""
    header: dict[str, Any] = {"MLflow run": f"{run_name} ({r.run_id})", "dataset": str(ds.root),
                              "split": f"{split} ({len(days)} {ds.sample_word}s)",
                              "ensemble members": m, "seed": seed,
                              "units": ds.normalization.units,
                              "P95 / P99": f"{ev['thresholds']['P95']:.3f} / "
                                           f"{ev['thresholds']['P99']:.3f}"}
    for role, lm in models.items():
        header[role] = f"{lm.uri} (kind {lm.kind}, run {lm.run_id or 'unknown'})"
    evaluation = {
        "run_id": r.run_id, "run_name": run_name, "header": header, "notes": notes,
        "days": days.tolist(), "metrics": metrics, "curves": ev["curves"],
        "upstream_histories": histories,
        "models": {role: {"uri": lm.uri, "kind": lm.kind, "run_id": lm.run_id,
                          "checkpoint": str(lm.checkpoint)} for role, lm in models.items()},
    }
    if aug is not None:
        evaluation["augmentation"] = {k: aug.get(k) for k in (
            "metrics", "curves", "notes", "run_ids", "heavy_days", "n_synthetic", "skipped",
            "verdicts")}
    evaluation["verdict"] = [dict(zip(verdict_.HEADER, c.row())) for c in found or []]
    rep = Report(title=f"precipgen evaluation {run_name}", header=header, metrics=metrics,
                 figures=figures, notes=notes, console=console_text, verdict=list(found or []),
                 units=ds.normalization.units)
    write_report(report_dir, rep, evaluation)
    names = {"gen": "generative", "cvae": "cvae", "oracle": "oracle"}
    cf.write_ensemble(
        report_dir / "ensemble.nc", cf.Grid.of(ds), days, ev["truth"],
        {names.get(k, k): v for k, v in ev["ensembles"].items()}, ev["det"],
        f"precipgen evaluate: run {r.run_id}; models "
        + ", ".join(f"{role} {lm.run_id or lm.uri}" for role, lm in models.items()),
        {"split": split, "num_samples": m, "seed": seed, "evaluate_run_id": r.run_id,
         "dataset": str(ds.root), "dataset_digest": ds.digest})
    for f in figures:
        f.figure.clf()
    r.log_artifacts(report_dir, "report")
