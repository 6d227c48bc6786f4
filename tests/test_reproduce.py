"""``mrif reproduce`` and ``mrif report`` on the small synthetic dataset."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from mrif import reproduce as reproduce_module
from mrif.cli import main
from mrif.config import ModelConfig, RunConfig, TrainConfig
from mrif.models import MODEL_NAMES
from mrif.report import markdown_table, per_user_metrics
from mrif.reproduce import RUN_ORDER, parse_models, plan_runs, reproduce
from mrif.runs import RunError

FAST = ["--dim", "8", "--max-len", "8", "--epochs", "2", "--quiet"]
MODELS = "pop,gru4rec,sasrec,mrif-attn"  # table order


@contextmanager
def edited_json(path: Path) -> Iterator[dict[str, Any]]:
    """A finished run's JSON file, loaded for the body to change and written back after."""
    content = json.loads(path.read_text())
    yield content
    path.write_text(json.dumps(content))


def fast_config(epochs: int = 2) -> RunConfig:
    return RunConfig(ModelConfig(dim=8, max_len=8), TrainConfig(epochs=epochs))


@pytest.fixture(scope="module")
def reproduction(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repro") / "beauty-like"
    argv = ["reproduce", "--data", str(tiny_dataset_dir), "--models", MODELS]
    assert main([*argv, "--seeds", "2", "--out", str(out), *FAST]) == 0
    return out


def test_every_model_and_seed_gets_a_finished_run(reproduction: Path) -> None:
    for model in MODELS.split(","):
        for seed in (0, 1):
            metrics = json.loads(
                (reproduction / "runs" / f"{model}-s{seed}" / "metrics.json").read_text()
            )
            assert (metrics["model"], metrics["seed"]) == (model, seed)


def test_mrif_reuses_the_sasrec_run_of_its_seed(reproduction: Path) -> None:
    metrics = json.loads((reproduction / "runs" / "mrif-attn-s1" / "metrics.json").read_text())
    assert metrics["pretrained_from"] == str((reproduction / "runs" / "sasrec-s1").resolve())
    assert metrics["pretrain"] is None


def test_table_has_models_as_columns_and_seven_metric_rows(reproduction: Path) -> None:
    table = (reproduction / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| metric"))
    assert header.split("|")[2:-1] == [f" {m} " for m in MODELS.split(",")]
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["auc", "gauc", "hit@5", "hit@10", "ndcg@5", "ndcg@10", "mrr"]
    with (reproduction / "table.csv").open() as handle:
        table_rows = list(csv.DictReader(handle))
    sasrec = [
        json.loads((reproduction / "runs" / f"sasrec-s{s}" / "metrics.json").read_text())["test"]
        for s in (0, 1)
    ]
    hit10 = next(row for row in table_rows if row["metric"] == "hit@10")
    assert float(hit10["sasrec_mean"]) == pytest.approx(
        np.mean([m["hit@10"] for m in sasrec]), abs=1e-6
    )
    assert float(hit10["sasrec_std"]) == pytest.approx(
        np.std([m["hit@10"] for m in sasrec], ddof=1), abs=1e-6
    )
    assert "hit@10" in (reproduction / "table_full.md").read_text()
    assert (reproduction / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_timing_table_sums_the_runs(reproduction: Path) -> None:
    timing = (reproduction / "timing.md").read_text()
    total = sum(
        json.loads(path.read_text())["timing"]["total_seconds"]
        for path in (reproduction / "runs").glob("*/metrics.json")
    )
    assert f"Sum over all runs: {total:.0f} s" in timing
    sasrec = next(line for line in timing.splitlines() if line.startswith("| sasrec |"))
    assert sasrec.split("|")[2].strip() == "2"


def test_significance_compares_mrif_with_sasrec_over_pooled_users(reproduction: Path) -> None:
    with (reproduction / "significance.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["metric"] for row in rows} == {
        "gauc",
        "hit@5",
        "hit@10",
        "ndcg@5",
        "ndcg@10",
        "mrr",
    }
    assert {(row["model"], row["reference"]) for row in rows} == {("mrif-attn", "sasrec")}
    n_users = pl.read_parquet(reproduction / "runs" / "sasrec-s0" / "test_ranks.parquet").height
    for row in rows:
        assert int(row["n_pairs"]) == 2 * n_users and int(row["n_seeds"]) == 2
        assert 0.0 <= float(row["t_pvalue"]) <= 1.0 and 0.0 <= float(row["wilcoxon_pvalue"]) <= 1.0
    mrif_hit = [
        json.loads((reproduction / "runs" / f"mrif-attn-s{s}" / "metrics.json").read_text())[
            "test"
        ]["hit@10"]
        for s in (0, 1)
    ]
    hit10 = next(row for row in rows if row["metric"] == "hit@10")
    assert float(hit10["mean_model"]) == pytest.approx(np.mean(mrif_hit), abs=1e-6)


def test_an_interrupted_reproduction_resumes_without_retraining(
    reproduction: Path, tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_train(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(reproduce_module, "_train_one", must_not_train)
    paths = reproduce(
        str(tiny_dataset_dir), parse_models(MODELS), [0, 1], reproduction, fast_config()
    )
    assert paths["table"].exists()


def test_a_finished_run_with_another_config_is_refused(
    reproduction: Path, tiny_dataset_dir: Path
) -> None:
    with pytest.raises(RunError, match=r"differs in train\.epochs"):
        reproduce(str(tiny_dataset_dir), ["pop"], [0], reproduction, fast_config(epochs=3))


def test_a_run_recorded_before_valid_every_existed_validated_every_epoch(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "repro"
    config = fast_config()
    assert reproduce(str(tiny_dataset_dir), ["gru4rec"], [0], out, config)
    with edited_json(out / "runs" / "gru4rec-s0" / "config.json") as record:
        del record["config"]["train"]["valid_every"]  # as written before the field existed
        record["config"]["train"]["eval_batch_size"] = 7  # speed only: never a reason to retrain
    with pytest.raises(RunError, match=r"differs in train\.valid_every; "):
        reproduce(str(tiny_dataset_dir), ["gru4rec"], [0], out, config)
    every_epoch = config.with_overrides({}, {"valid_every": 1})
    assert reproduce(str(tiny_dataset_dir), ["gru4rec"], [0], out, every_epoch)


def test_a_finished_run_on_an_older_dataset_format_is_refused(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "repro"
    assert reproduce(str(tiny_dataset_dir), ["pop"], [0], out, fast_config())
    with edited_json(out / "runs" / "pop-s0" / "config.json") as record:
        del record["dataset"]["format_version"]  # as written before the field existed
    with pytest.raises(RunError, match=r"differs in dataset format_version"):
        reproduce(str(tiny_dataset_dir), ["pop"], [0], out, fast_config())


def test_a_failed_run_is_named_and_its_dependants_skipped(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_train_one = reproduce_module._train_one

    def sasrec_fails(data, run, config, data_seed):  # noqa: ANN001
        if run.model == "sasrec":
            raise FloatingPointError("loss became nan")
        return real_train_one(data, run, config, data_seed)

    monkeypatch.setattr(reproduce_module, "_train_one", sasrec_fails)
    with pytest.raises(RunError) as failure:
        reproduce(
            str(tiny_dataset_dir), ["pop", "sasrec", "mrif-avg"], [0], tmp_path, fast_config()
        )
    message = str(failure.value)
    assert "sasrec seed 0: FloatingPointError: loss became nan" in message
    assert "mrif-avg seed 0: skipped: sasrec seed 0 failed" in message
    assert (tmp_path / "runs" / "pop-s0" / "metrics.json").exists()
    assert "pop" in (tmp_path / "table.md").read_text()


def test_parallel_jobs_give_the_same_runs_as_one_at_a_time(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    config = fast_config().with_overrides({}, {"threads": 1})
    serial = tmp_path / "serial"
    parallel = tmp_path / "parallel"
    reproduce(str(tiny_dataset_dir), ["sasrec", "mrif-max"], [0], serial, config)
    reproduce(str(tiny_dataset_dir), ["sasrec", "mrif-max"], [0], parallel, config, jobs=2)
    for model in ("sasrec", "mrif-max"):
        ours = json.loads((parallel / "runs" / f"{model}-s0" / "metrics.json").read_text())
        theirs = json.loads((serial / "runs" / f"{model}-s0" / "metrics.json").read_text())
        assert ours["test"] == theirs["test"]


def test_a_run_failing_in_a_worker_process_is_reported(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    config = fast_config().with_overrides({}, {"threads": 1, "device": "cuda"})
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA to make the run fail")
    with pytest.raises(RunError, match="pop seed 0: RunError: device is 'cuda'"):
        reproduce(str(tiny_dataset_dir), ["pop", "bpr"], [0], tmp_path, config, jobs=2)


def test_stale_work_directories_of_interrupted_runs_are_removed(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    stale = tmp_path / "runs" / ".pop-s0.abc123"
    stale.mkdir(parents=True)
    (stale / "train.log").write_text("interrupted\n")
    reproduce(str(tiny_dataset_dir), ["pop"], [0], tmp_path, fast_config())
    assert not stale.exists()
    assert (tmp_path / "runs" / "pop-s0" / "metrics.json").exists()


def test_plan_starts_each_seed_with_sasrec_which_the_mrif_runs_need(tmp_path: Path) -> None:
    plan = plan_runs(["mrif-attn", "pop", "sasrec", "gru4rec"], [3, 4], tmp_path)
    assert [run.model for run in plan[:4]] == ["sasrec", "mrif-attn", "gru4rec", "pop"]
    assert [run.seed for run in plan] == [3, 3, 3, 3, 4, 4, 4, 4]
    assert plan[1].pretrained == tmp_path / "sasrec-s3"
    assert plan[3].pretrained is None
    assert plan_runs(["mrif-attn"], [0], tmp_path)[0].pretrained is None


def test_run_order_covers_every_model_once() -> None:
    assert sorted(RUN_ORDER) == sorted(MODEL_NAMES)


def test_unknown_models_are_named() -> None:
    with pytest.raises(ValueError, match="unknown model transformer"):
        parse_models("sasrec,transformer")


def test_markdown_table_bolds_the_best_and_underlines_the_best_baseline() -> None:
    summary = {
        "pop": {"hit@10": (0.30, 0.0, 1)},
        "sasrec": {"hit@10": (0.45, 0.01, 3)},
        "mrif-attn": {"hit@10": (0.50, 0.02, 3)},
    }
    table = markdown_table(summary, ("hit@10",))
    line = next(row for row in table.splitlines() if "hit@10 |" in row)
    cells = [cell.strip() for cell in line.split("|")[2:-1]]
    assert cells == ["0.3000", "<u>0.4500 ± 0.0100</u>", "**0.5000 ± 0.0200**"]


def test_per_user_metrics_follow_rule_12() -> None:
    values = per_user_metrics(np.array([1, 3, 11]), np.array([100, 100, 0]))
    assert values["hit@10"].tolist() == [1.0, 1.0, 0.0]
    assert values["ndcg@10"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert values["mrr"].tolist() == pytest.approx([1.0, 1 / 3, 1 / 11])
    assert values["gauc"][:2].tolist() == pytest.approx([1.0, 0.98])
    assert np.isnan(values["gauc"][2])


def test_workers_do_not_load_the_report_statistics() -> None:
    """Each run's spawned worker imports ``mrif.reproduce``; the report's scipy stack would
    add about half a second to every one of a reproduction's runs."""
    check = "import sys, mrif.reproduce; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    ).stdout
    assert "'torch'" in loaded
    assert "'scipy'" not in loaded and "'matplotlib'" not in loaded


def test_a_data_parallel_run_is_not_reused_as_a_one_process_run(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "repro"
    assert reproduce(str(tiny_dataset_dir), ["pop"], [0], out, fast_config())
    with edited_json(out / "runs" / "pop-s0" / "metrics.json") as metrics:
        metrics["environment"]["processes"] = 2  # as mrif train under torchrun records it
    with pytest.raises(RunError, match=r"differs in processes \(a data-parallel run\)"):
        reproduce(str(tiny_dataset_dir), ["pop"], [0], out, fast_config())
