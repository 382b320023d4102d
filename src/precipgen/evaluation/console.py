"""Console sections of the evaluation, in the wording of the seed's ``test_generative_outputs.py``
(so users recognise them), followed by the new score families."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from precipgen.scores.ensemble import Indicator

Print = Callable[[str], None]


class Console:
    """Prints and keeps the lines (the report reproduces them)."""

    def __init__(self, verbose: bool = True) -> None:
        self.lines: list[str] = []
        self.verbose = verbose  # False: kept for the report only (the step prints a summary)

    def __call__(self, line: str) -> None:
        if self.verbose:
            print(line, flush=True)
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _f(v: Any, nd: int = 6) -> str:
    try:
        return f"{float(v):.{nd}f}"
    except (TypeError, ValueError):
        return str(v)


def deterministic_test(m: dict[str, float], out: Print = print) -> None:
    out("🎯 Testing DETERMINISTIC model...")
    out(f"   📊 Deterministic outputs variance: {_f(m['det_output_max_variance'], 10)}")
    out(f"   🎯 Is deterministic: {bool(m['is_deterministic'])}")
    out("")


def generative_test(m: dict[str, float], prefix: str = "gen", title: str = "GENERATIVE model",
                    out: Print = print) -> None:
    out(f"🎨 Testing {title}...")
    out(f"   📊 Generative outputs max variance: {_f(m[f'{prefix}_output_max_variance'])}")
    out(f"   📊 Generative outputs mean variance: {_f(m[f'{prefix}_output_mean_variance'])}")
    out(f"   🎨 Is generative: {bool(m[f'{prefix}_is_generative'])}")
    out("")


def uncertainty_test(m: dict[str, float], shape: tuple[int, ...], prefix: str = "gen",
                     out: Print = print) -> None:
    out("🎲 Testing ENSEMBLE UNCERTAINTY")
    out(f"   📊 Ensemble shape: {tuple(shape)}")
    out(f"   📊 Mean prediction range: [{_f(m[f'{prefix}_mean_min'], 4)}, "
        f"{_f(m[f'{prefix}_mean_max'], 4)}]")
    out(f"   📊 Uncertainty range: [{_f(m[f'{prefix}_std_min'], 4)}, "
        f"{_f(m[f'{prefix}_std_max'], 4)}]")
    out(f"   📊 Average uncertainty: {_f(m[f'{prefix}_uncertainty'], 4)}")
    out("")


def crps_comparison(m: dict[str, float], units: str, out: Print = print) -> None:
    out("🎯 Comparing CRPS LOSS")
    out(f"   📊 Deterministic CRPS: {_f(m['det_CRPS'])}  (= its MAE, {units})")
    out(f"   📊 Generative CRPS: {_f(m['gen_CRPS'])}  (fair; standard "
        f"{_f(m['gen_CRPS_standard'])})")
    out(f"   📊 Improvement: {m['crps_improvement_pct']:.2f}%")
    for t in ("P95", "P99"):
        out(f"   📊 twCRPS {t}: deterministic {_f(m.get(f'det_twCRPS_{t}'))}, generative "
            f"{_f(m.get(f'gen_twCRPS_{t}'))}")
    if "oracle_CRPS" in m:
        ratios = ", ".join(f"{p} {m[f'{p}_oracle_ratio']:.3f}" for p in ("det", "gen", "cvae")
                           if f"{p}_oracle_ratio" in m)
        out(f"   📊 Oracle CRPS (exact samples of p(Y|X,S)): {_f(m['oracle_CRPS'])}; "
            f"ratio to oracle: {ratios}")
    out("")


def calibration_section(m: dict[str, float], prefixes: list[str], out: Print = print) -> None:
    out("📐 CALIBRATION")
    for p in prefixes:
        out(f"   📊 {p}: spread-skill {m[f'{p}_spread_skill']:.3f} (1 = calibrated), rank "
            f"histogram reliability index {m[f'{p}_rank_reliability_index']:.3f} (p = "
            f"{m[f'{p}_rank_pvalue']:.3g}), Brier P95 {_f(m[f'{p}_brier_P95'], 4)}, "
            f"P99 {_f(m[f'{p}_brier_P99'], 4)}")
    out("")


def extremes_section(m: dict[str, float], prefixes: list[str], units: str,
                     out: Print = print) -> None:
    out(f"🌧️  EXTREMES AND DISTRIBUTION ({units})")
    for p in prefixes:
        out(f"   📊 {p}: MAE_all {_f(m[f'{p}_MAE_all'], 4)}, MAE_tail {_f(m[f'{p}_MAE_tail'], 4)}"
            f", P95 bias {_f(m[f'{p}_P95_bias'], 3)}, P99 bias {_f(m[f'{p}_P99_bias'], 3)}, "
            f"max bias {_f(m[f'{p}_max_bias'], 3)}, wet freq {_f(m[f'{p}_wet_frequency'], 3)}, "
            f"SDII {_f(m[f'{p}_SDII'], 3)}, mass bias {m[f'{p}_mass_bias']:+.3f}")
    out("")


def spatial_section(m: dict[str, float], prefixes: list[str], out: Print = print) -> None:
    out("🗺️  SPATIAL STRUCTURE")
    for p in prefixes:
        out(f"   📊 {p}: small-scale power ratio {_f(m[f'{p}_spectral_ratio'], 3)} (< 1 = "
            f"over-smoothed), FSS P99 at 1/4/16 px {_f(m[f'{p}_FSS_P99_1px'], 3)}/"
            f"{_f(m[f'{p}_FSS_P99_4px'], 3)}/{_f(m[f'{p}_FSS_P99_16px'], 3)}, spatial corr "
            f"{_f(m[f'{p}_spatial_corr'], 3)}")
    out("")


def success_section(ind: dict[str, Indicator], out: Print = print) -> None:
    def mark(key: str) -> str:
        return "✅" if ind[key].passed else "❌"

    if all(i.passed for i in ind.values()):
        out("🎉 SUCCESS: Model is now GENERATIVE!")
        out("💡 The model produces diverse outputs for the same input!")
    else:
        failed = ", ".join(k for k, i in ind.items() if not i.passed)
        out(f"⚠️  NOT YET: the generative model fails {failed}")
    out(f"{mark('generative_variance')} Generative model variance: "
        f"{ind['generative_variance'].value:.6f} (> {ind['generative_variance'].threshold:g})")
    out(f"{mark('diversity')} Diversity score: {ind['diversity'].value:.6f} "
        f"(> {ind['diversity'].threshold:g})")
    out(f"{mark('crps_improvement_pct')} CRPS improvement: "
        f"{ind['crps_improvement_pct'].value:.2f}% (> {ind['crps_improvement_pct'].threshold:g}%)")
    out(f"{mark('uncertainty')} Uncertainty: {ind['uncertainty'].value:.6f} "
        f"(> {ind['uncertainty'].threshold:g})")
    out("")
