"""benchmarks/bench_prepare.py at small scale: the synthetic log has the promised shape, and
a benchmark run reports what the prepared dataset holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory):
    # Imported by name (not by file path) so the spawned preparation process can import it too.
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_prepare

        yield bench_prepare
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def log(bench, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bench")
    return bench.generate_log(directory, 20_000, chunk_rows=3_000, csv=True)


def test_log_has_the_promised_shape(log):
    df = pl.read_parquet(log)
    assert df.height == 20_000
    assert dict(df.schema) == {
        "user": pl.String, "item": pl.String, "timestamp": pl.Int64, "rating": pl.Float64,
    }  # fmt: skip
    assert not (log.parent / "parts").exists()

    lengths = df.group_by("user").len()["len"].to_numpy()
    assert 10 <= lengths.mean() <= 20  # mean around 15
    assert np.median(lengths) < 0.7 * lengths.mean()  # most users short, a long tail
    assert lengths.max() > 10 * lengths.mean()

    counts = np.sort(df.group_by("item").len()["len"].to_numpy())[::-1]
    top = counts[: max(1, counts.size // 100)].sum() / df.height
    assert top > 0.3  # Zipf: the top 1% of items take a large share of the events
    assert df["item"].n_unique() <= 1_000  # the catalogue: rows // 30, at least 1,000

    per_user = df.with_columns(step=pl.col("timestamp").diff().over("user"))
    assert per_user["step"].min() == 0  # ties occur...
    assert (per_user["step"].drop_nulls() >= 0).all()  # ...but time never goes back
    assert df["timestamp"].min() >= 1_325_376_000 and df["timestamp"].max() < 4_102_444_800
    # Users are spread over the file, not written one after the other.
    rows = (
        df.with_row_index()
        .group_by("user")
        .agg(first=pl.col("index").min(), last=pl.col("index").max(), n=pl.len())
    )
    spread = rows.filter(pl.col("n") >= 5).select(pl.col("last") - pl.col("first")).to_series()
    assert spread.mean() > 20_000 / 2


def test_csv_copy_holds_the_same_rows(log):
    assert pl.read_csv(log.with_suffix(".csv"), schema_overrides={"item": pl.String}).equals(
        pl.read_parquet(log)
    )


def test_benchmark_reports_the_prepared_counts(bench, log, tmp_path, capsys):
    out = tmp_path / "prepared"
    result = bench.run_benchmark(log, out, k_core=5)
    meta = json.loads((out / "meta.json").read_text())

    assert result["rows"] == 20_000 and result["format"] == "parquet"
    assert result["n_interactions"] == meta["n_interactions"] < 20_000  # the 5-core dropped some
    assert (result["n_users"], result["n_items"]) == (meta["n_users"], meta["n_items"])
    assert result["prepare_seconds"] > 0 and 0.05 < result["peak_rss_gib"] < 8
    assert meta["recipe"]["k_core"] == 5

    text = bench.report(result)
    assert f"{result['n_interactions']:,} interactions" in text
    assert json.loads(text.splitlines()[-1]) == result


def test_main_reuses_the_log_and_prints_a_json_line(bench, log, capsys):
    assert bench.main(["--dir", str(log.parent), "--rows", "20000"]) == 0
    printed = capsys.readouterr().out
    assert "generated" not in printed  # the log of the first test was reused
    assert json.loads(printed.splitlines()[-1])["rows"] == 20_000
    assert not (log.parent / "prepared-parquet").exists()
