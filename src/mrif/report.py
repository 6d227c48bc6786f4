"""Tables, significance tests and a figure from a directory of finished runs.

The layout follows the MRIF paper's Table 2: metrics as rows, models as columns, each cell the
mean and sample standard deviation over seeds, the best value in bold and the best baseline
underlined. Significance compares each MRIF variant with SASRec per evaluated user, pooled
over seeds: a run of seed s is paired with the SASRec run of the same seed, user by user.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from mrif.models import MODEL_NAMES, MRIF_NAMES
from mrif.runs import TEST_RANKS

SAMPLED_KEYS = ("auc", "gauc", "hit@5", "hit@10", "ndcg@5", "ndcg@10", "mrr")
FULL_KEYS = ("hit@10", "ndcg@10", "mrr")
PAIRED_KEYS = ("gauc", "hit@5", "hit@10", "ndcg@5", "ndcg@10", "mrr")
"""Metrics with a per-user value; ``auc`` pools every user's candidates into one statistic,
so it has no per-user pairs and is not tested."""
REFERENCE_MODEL = "sasrec"


class ReportError(RuntimeError):
    """Runs that cannot be summarised."""


@dataclass(frozen=True)
class RunResult:
    model: str
    seed: int
    path: Path
    metrics: dict[str, Any]


def collect_runs(runs_dir: Path) -> list[RunResult]:
    """Every finished run (a directory with ``metrics.json``) under ``runs_dir``."""
    results = []
    for metrics_path in sorted(runs_dir.glob("*/metrics.json")):
        metrics = json.loads(metrics_path.read_text())
        results.append(
            RunResult(metrics["model"], int(metrics["seed"]), metrics_path.parent, metrics)
        )
    if not results:
        raise ReportError(f"{runs_dir}: no finished runs (no */metrics.json)")
    return results


def summarise(
    results: list[RunResult], section: str, keys: tuple[str, ...]
) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``{model: {metric: (mean, std, n_runs)}}`` over seeds; std is the sample standard
    deviation (0 for a single run). Models come in the paper's table order."""
    by_model: dict[str, list[dict[str, float]]] = {}
    for result in results:
        by_model.setdefault(result.model, []).append(result.metrics[section])
    summary: dict[str, dict[str, tuple[float, float, int]]] = {}
    for model in sorted(by_model, key=_table_order):
        runs = by_model[model]
        summary[model] = {}
        for key in keys:
            values = np.array([run[key] for run in runs], dtype=np.float64)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            summary[model][key] = (float(values.mean()), std, len(values))
    return summary


def _table_order(model: str) -> int:
    return MODEL_NAMES.index(model) if model in MODEL_NAMES else len(MODEL_NAMES)


def _leaders(
    summary: dict[str, dict[str, tuple[float, float, int]]], key: str
) -> tuple[str, str | None]:
    """The best model and the best baseline (non-MRIF model) on ``key``."""
    best = max(summary, key=lambda m: summary[m][key][0])
    baselines = [m for m in summary if m not in MRIF_NAMES]
    best_baseline = max(baselines, key=lambda m: summary[m][key][0]) if baselines else None
    return best, best_baseline


def markdown_table(
    summary: dict[str, dict[str, tuple[float, float, int]]], keys: tuple[str, ...]
) -> str:
    """Metrics as rows, models as columns; bold = best, underlined = best baseline."""
    models = list(summary)
    lines = [
        "| metric | " + " | ".join(models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    for key in keys:
        best, best_baseline = _leaders(summary, key)
        cells = []
        for model in models:
            mean, std, n_runs = summary[model][key]
            # One run has no spread to show; "± 0.0000" would claim one.
            cell = f"{mean:.4f} ± {std:.4f}" if n_runs > 1 else f"{mean:.4f}"
            if model == best:
                cell = f"**{cell}**"
            if model == best_baseline:
                cell = f"<u>{cell}</u>"
            cells.append(cell)
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    runs = ", ".join(f"{m} {summary[m][keys[0]][2]}" for m in models)
    lines += ["", f"Mean ± sample standard deviation over runs ({runs}); one run: its value."]
    return "\n".join(lines) + "\n"


def write_csv_table(
    path: Path, summary: dict[str, dict[str, tuple[float, float, int]]], keys: tuple[str, ...]
) -> None:
    """The same table as CSV: one row per metric, a mean and a std column per model."""
    models = list(summary)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["metric"] + [f"{m}_{part}" for m in models for part in ("mean", "std")])
        for key in keys:
            row: list[str | float] = [key]
            for model in models:
                mean, std, _ = summary[model][key]
                row += [round(mean, 6), round(std, 6)]
            writer.writerow(row)


def per_user_metrics(ranks: np.ndarray, n_negatives: np.ndarray) -> dict[str, np.ndarray]:
    """Each user's value of the paired metrics, from the sampled rank (rules 11-12).

    The per-user AUC is the share of the user's negatives scored strictly below the target;
    a negative that ties the target counts as beating it (rule 11), so it can sit slightly
    under the run's ``gauc``, which counts ties one half.
    """
    ranks = ranks.astype(np.float64)
    out = {"mrr": 1.0 / ranks}
    for k in (5, 10):
        hit = ranks <= k
        out[f"hit@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["gauc"] = np.where(n_negatives > 0, 1.0 - (ranks - 1.0) / n_negatives, np.nan)
    return out


def _load_ranks(result: RunResult) -> pl.DataFrame:
    path = result.path / TEST_RANKS
    if not path.exists():
        raise ReportError(f"{path} is missing; the significance test needs per-user ranks")
    return pl.read_parquet(path).with_columns(pl.lit(result.seed).alias("seed"))


def significance(results: list[RunResult]) -> list[dict[str, Any]]:
    """Paired per-user t-test and Wilcoxon signed-rank test of each MRIF variant against
    SASRec, per metric, pooling (user, seed) pairs over the seeds both models ran."""
    reference = {r.seed: r for r in results if r.model == REFERENCE_MODEL}
    rows = []
    for model in [m for m in MRIF_NAMES if any(r.model == m for r in results)]:
        pairs = []
        for result in [r for r in results if r.model == model and r.seed in reference]:
            ours = _load_ranks(result)
            theirs = _load_ranks(reference[result.seed])
            pairs.append(ours.join(theirs, on=["user_id", "seed"], suffix="_ref"))
        if not pairs:
            continue
        joined = pl.concat(pairs)
        n_neg = joined["n_negatives"].to_numpy()
        ours_values = per_user_metrics(joined["rank_sampled"].to_numpy(), n_neg)
        ref_values = per_user_metrics(joined["rank_sampled_ref"].to_numpy(), n_neg)
        for key in PAIRED_KEYS:
            a, b = ours_values[key], ref_values[key]
            keep = ~(np.isnan(a) | np.isnan(b))
            rows.append(_paired_tests(model, key, a[keep], b[keep], len(pairs)))
    return rows


def _paired_tests(
    model: str, key: str, ours: np.ndarray, reference: np.ndarray, n_seeds: int
) -> dict[str, Any]:
    diff = ours - reference
    if np.all(diff == 0):
        t_stat, t_p, w_stat, w_p = 0.0, 1.0, 0.0, 1.0
    else:
        t_result = stats.ttest_rel(ours, reference)
        w_result = stats.wilcoxon(ours, reference)
        t_stat, t_p = float(t_result.statistic), float(t_result.pvalue)
        w_stat, w_p = float(w_result.statistic), float(w_result.pvalue)
    return {
        "model": model,
        "reference": REFERENCE_MODEL,
        "metric": key,
        "n_seeds": n_seeds,
        "n_pairs": len(diff),
        "mean_model": float(ours.mean()),
        "mean_reference": float(reference.mean()),
        "mean_difference": float(diff.mean()),
        "t_statistic": t_stat,
        "t_pvalue": t_p,
        "wilcoxon_statistic": w_stat,
        "wilcoxon_pvalue": w_p,
    }


def write_figure(path: Path, summary: dict[str, dict[str, tuple[float, float, int]]]) -> None:
    """Bar chart of hit@10 and ndcg@10 (sampled protocol) per model with std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(summary)
    colours = ["tab:orange" if m in MRIF_NAMES else "tab:blue" for m in models]
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(models)), 3.8))
    for ax, key in zip(axes, ("hit@10", "ndcg@10"), strict=True):
        means = [summary[m][key][0] for m in models]
        stds = [summary[m][key][1] for m in models]
        ax.bar(models, means, yerr=stds, color=colours, capsize=3)
        ax.set_title(f"{key} (sampled, test)")
        ax.tick_params(axis="x", labelrotation=60)
        ax.set_ylim(0, max(means) * 1.15 if means and max(means) > 0 else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def timing_table(results: list[RunResult]) -> str:
    """Per model: runs, mean epochs, seconds per epoch, and total seconds (training and
    testing, summed over its runs), read from each run's ``metrics.json``."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_model.setdefault(result.model, []).append(result.metrics)
    lines = [
        "| model | runs | mean epochs | s / epoch | mean s / run | total s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    grand_total = 0.0
    for model in sorted(by_model, key=_table_order):
        runs = by_model[model]
        totals = [run["timing"]["total_seconds"] for run in runs]
        epochs = [run["epochs_run"] for run in runs]
        per_epoch = [run["timing"]["seconds_per_epoch"] for run in runs if run["epochs_run"]]
        grand_total += sum(totals)
        lines.append(
            f"| {model} | {len(runs)} | {np.mean(epochs):.1f} | "
            f"{np.mean(per_epoch) if per_epoch else 0.0:.2f} | {np.mean(totals):.0f} | "
            f"{sum(totals):.0f} |"
        )
    lines += [
        "",
        f"Sum over all runs: {grand_total:.0f} s ({grand_total / 60:.1f} min) of run time; with "
        "several runs at once (`--jobs`), wall time is lower. MRIF runs that reuse a SASRec run "
        "exclude its pre-training.",
    ]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv``, ``table_full.md``, ``significance.csv``,
    ``timing.md`` and ``figure.png`` into ``out_dir`` from the runs under ``out_dir/runs``."""
    results = collect_runs(out_dir / "runs")
    sampled = summarise(results, "test", SAMPLED_KEYS)
    full = summarise(results, "test_full", FULL_KEYS)
    paths = {
        "table": out_dir / "table.md",
        "table_csv": out_dir / "table.csv",
        "table_full": out_dir / "table_full.md",
        "significance": out_dir / "significance.csv",
        "timing": out_dir / "timing.md",
        "figure": out_dir / "figure.png",
    }
    dataset = results[0].metrics["dataset"].get("name") or results[0].metrics["dataset"]["path"]
    header = f"Test target, sampled protocol (100 negatives), dataset {dataset}.\n\n"
    paths["table"].write_text(header + markdown_table(sampled, SAMPLED_KEYS))
    write_csv_table(paths["table_csv"], sampled, SAMPLED_KEYS)
    header_full = f"Test target, full ranking over all items, dataset {dataset}.\n\n"
    paths["table_full"].write_text(header_full + markdown_table(full, FULL_KEYS))
    rows = significance(results)
    with paths["significance"].open("w", newline="") as handle:
        fields = list(rows[0]) if rows else ["model", "reference", "metric"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _round(v) for k, v in row.items()})
    paths["timing"].write_text(timing_table(results))
    write_figure(paths["figure"], sampled)
    return paths


def _round(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    return value
