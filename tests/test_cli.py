"""The command line end to end on a small synthetic dataset: prepare, train, evaluate."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mrif.cli import main

FAST = ["--dim", "8", "--max-len", "8", "--epochs", "2", "--pretrain-epochs", "1", "--quiet"]


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def sasrec_run(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "sasrec"
    assert (
        run_cli("train", "--data", tiny_dataset_dir, "--model", "sasrec", "--out", out, *FAST) == 0
    )
    return out


def test_train_writes_a_complete_run_directory(sasrec_run: Path) -> None:
    metrics = json.loads((sasrec_run / "metrics.json").read_text())
    for key in (
        "model",
        "dataset",
        "seed",
        "loss",
        "best_epoch",
        "valid",
        "test",
        "test_full",
        "timing",
    ):
        assert key in metrics, key
    assert set(metrics["test"]) == {"auc", "gauc", "hit@5", "hit@10", "ndcg@5", "ndcg@10", "mrr"}
    assert {"hit@10", "ndcg@10", "mrr"} <= set(metrics["test_full"])
    assert metrics["model"] == "sasrec" and metrics["seed"] == 0
    for name in (
        "config.json",
        "weights.safetensors",
        "items.parquet",
        "users.parquet",
        "train.log",
        "test_ranks.parquet",
    ):
        assert (sasrec_run / name).exists(), name
    assert "epoch 1/2" in (sasrec_run / "train.log").read_text()


@pytest.mark.parametrize("protocol", ["sampled", "full"])
def test_evaluate_reproduces_metrics_json(sasrec_run: Path, protocol: str, capsys) -> None:
    capsys.readouterr()
    assert run_cli("evaluate", sasrec_run, "--protocol", protocol) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((sasrec_run / "metrics.json").read_text())
    assert printed["test"] == metrics["test" if protocol == "sampled" else "test_full"]


def test_same_seed_gives_identical_metrics(
    sasrec_run: Path, tiny_dataset_dir: Path, tmp_path
) -> None:
    out = tmp_path / "again"
    assert (
        run_cli("train", "--data", tiny_dataset_dir, "--model", "sasrec", "--out", out, *FAST) == 0
    )
    first = json.loads((sasrec_run / "metrics.json").read_text())
    again = json.loads((out / "metrics.json").read_text())
    assert (first["valid"], first["test"], first["test_full"]) == (
        again["valid"],
        again["test"],
        again["test_full"],
    )


def test_mrif_pretrains_its_extractor_then_trains(tiny_dataset_dir: Path, tmp_path) -> None:
    out = tmp_path / "mrif"
    assert (
        run_cli("train", "--data", tiny_dataset_dir, "--model", "mrif-attn", "--out", out, *FAST)
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pretrain"]["epochs_run"] == 1
    assert (out / "pretrain" / "weights.safetensors").exists()


def test_mrif_reuses_a_sasrec_run_as_its_extractor(
    sasrec_run: Path, tiny_dataset_dir: Path, tmp_path
) -> None:
    out = tmp_path / "mrif"
    args = ["train", "--data", tiny_dataset_dir, "--model", "mrif-avg", "--out", out, *FAST]
    assert run_cli(*args, "--pretrained", sasrec_run) == 0
    assert json.loads((out / "metrics.json").read_text())["pretrain"] is None


def test_missing_pretrained_extractor_is_an_error(tiny_dataset_dir: Path, tmp_path, capsys) -> None:
    args = ["train", "--data", tiny_dataset_dir, "--model", "mrif-max", "--out", tmp_path / "r"]
    assert run_cli(*args, *FAST, "--pretrained", tmp_path / "nowhere") == 2
    assert "pre-trained extractor not found" in capsys.readouterr().err


def test_unknown_config_key_lists_valid_keys(tiny_dataset_dir: Path, tmp_path, capsys) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[model]\nwidth = 32\n")
    args = ["train", "--data", tiny_dataset_dir, "--out", tmp_path / "r", "--config", config]
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) ['width']" in err and "valid keys: dim, n_heads" in err


def test_bad_flag_value_names_the_parameter(tiny_dataset_dir: Path, tmp_path, capsys) -> None:
    args = ["train", "--data", tiny_dataset_dir, "--out", tmp_path / "r", "--window", "4"]
    assert run_cli(*args) == 2
    assert "window must be a positive odd number; got 4" in capsys.readouterr().err


def test_window_longer_than_max_len_is_refused_for_mrif_only(
    tiny_dataset_dir: Path, tmp_path, capsys
) -> None:
    short = ["--max-len", "2", "--epochs", "1", "--dim", "8", "--quiet"]
    sasrec = ["train", "--data", tiny_dataset_dir, "--model", "sasrec", "--out", tmp_path / "s"]
    assert run_cli(*sasrec, *short) == 0
    mrif = ["train", "--data", tiny_dataset_dir, "--model", "mrif-avg", "--out", tmp_path / "m"]
    assert run_cli(*mrif, *short) == 2
    assert "window must be at most max_len=2 for MRIF; got 3" in capsys.readouterr().err


def test_config_file_and_flags_combine(tiny_dataset_dir: Path, tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[model]\ndim = 12\nmax_len = 8\n[train]\nepochs = 1\nlr = 0.01\n")
    out = tmp_path / "r"
    args = ["train", "--data", tiny_dataset_dir, "--model", "sasrec", "--out", out]
    assert run_cli(*args, "--config", config, "--lr", "0.002", "--quiet") == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["model"]["dim"] == 12 and saved["train"]["lr"] == 0.002
    assert saved["train"]["epochs"] == 1


def test_finished_run_is_not_overwritten_silently(
    sasrec_run: Path, tiny_dataset_dir: Path, capsys
) -> None:
    assert run_cli("train", "--data", tiny_dataset_dir, "--out", sasrec_run, *FAST) == 2
    assert "already holds a finished run" in capsys.readouterr().err


def test_prepare_command_writes_a_dataset(tmp_path, capsys) -> None:
    source = tmp_path / "log.csv"
    source.write_text("user,item,timestamp\nu1,a,3\nu1,b,1\nu1,c,2\nu2,a,5\n")
    assert run_cli("data", "prepare", source, "--out", tmp_path / "ds", "--negatives", "1") == 0
    assert "2 users, 3 items, 4 interactions, 1 evaluated users" in capsys.readouterr().out


def test_pretraining_reproduces_a_sasrec_run_of_the_same_seed(
    tiny_dataset_dir: Path, tmp_path
) -> None:
    """MRIF's inline pre-training is exactly a SASRec run, so a SASRec run can replace it."""
    common = ["--data", tiny_dataset_dir, "--dim", "8", "--max-len", "8", "--seed", "3", "--quiet"]
    sasrec, mrif = tmp_path / "sasrec", tmp_path / "mrif"
    assert (
        run_cli(
            "train", "--model", "sasrec", "--out", sasrec, *common, "--epochs", "2", "--lr", "0.004"
        )
        == 0
    )
    mrif_args = ["--pretrain-epochs", "2", "--pretrain-lr", "0.004", "--epochs", "1"]
    assert run_cli("train", "--model", "mrif-avg", "--out", mrif, *common, *mrif_args) == 0
    sasrec_metrics = json.loads((sasrec / "metrics.json").read_text())
    mrif_metrics = json.loads((mrif / "metrics.json").read_text())
    assert mrif_metrics["pretrain"]["valid"] == sasrec_metrics["valid"]
    pretrained = load_file(mrif / "pretrain" / "weights.safetensors")
    alone = load_file(sasrec / "weights.safetensors")
    assert pretrained.keys() == alone.keys()
    assert all(torch.equal(pretrained[k], alone[k]) for k in alone)


def test_mrif_from_a_sasrec_run_equals_mrif_pretrained_inline(
    tiny_dataset_dir: Path, tmp_path
) -> None:
    common = ["--data", tiny_dataset_dir, "--dim", "8", "--max-len", "8", "--seed", "5", "--quiet"]
    sasrec, inline, reused = tmp_path / "sasrec", tmp_path / "inline", tmp_path / "reused"
    assert run_cli("train", "--model", "sasrec", "--out", sasrec, *common, "--epochs", "2") == 0
    mrif = ["--model", "mrif-attn", "--epochs", "2", "--pretrain-epochs", "2", *common]
    assert run_cli("train", "--out", inline, *mrif) == 0
    assert run_cli("train", "--out", reused, *mrif, "--pretrained", sasrec) == 0
    inline_metrics = json.loads((inline / "metrics.json").read_text())
    reused_metrics = json.loads((reused / "metrics.json").read_text())
    for key in ("valid", "test", "test_full"):
        assert inline_metrics[key] == reused_metrics[key]


def test_failed_overwrite_keeps_the_finished_run(
    sasrec_run: Path, tiny_dataset_dir: Path, tmp_path, capsys
) -> None:
    before = {p.name: p.read_bytes() for p in sasrec_run.iterdir() if p.is_file()}
    args = ["train", "--data", tiny_dataset_dir, "--model", "mrif-attn", "--out", sasrec_run]
    assert run_cli(*args, *FAST, "--overwrite", "--pretrained", tmp_path / "nowhere") == 2
    after = {p.name: p.read_bytes() for p in sasrec_run.iterdir() if p.is_file()}
    assert before == after
    assert not [p for p in sasrec_run.parent.iterdir() if p.name.startswith(f".{sasrec_run.name}")]


def test_failed_run_leaves_no_directory(tmp_path) -> None:
    source = tmp_path / "short.csv"
    source.write_text("user,item,timestamp\nu1,a,1\nu1,b,2\nu2,a,3\n")
    out = tmp_path / "run"
    assert run_cli("train", "--data", source, "--model", "sasrec", "--out", out, *FAST) == 2
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["short.csv"]


def test_quiet_silences_the_terminal_but_not_the_log(
    tiny_dataset_dir: Path, tmp_path, capsys
) -> None:
    out = tmp_path / "run"
    assert (
        run_cli("train", "--data", tiny_dataset_dir, "--model", "sasrec", "--out", out, *FAST) == 0
    )
    assert "epoch" not in capsys.readouterr().err
    assert "sasrec epoch 1/2" in (out / "train.log").read_text()


def test_pretrained_is_checked_against_the_run(
    sasrec_run: Path, tiny_dataset_dir: Path, tmp_path, capsys
) -> None:
    base = [
        "train",
        "--data",
        tiny_dataset_dir,
        "--out",
        tmp_path / "r",
        "--pretrained",
        sasrec_run,
    ]
    assert run_cli(*base, "--model", "sasrec", *FAST) == 2
    assert "--pretrained applies to MRIF models only" in capsys.readouterr().err
    assert run_cli(*base, "--model", "mrif-attn", *FAST, "--dim", "16") == 2
    assert "has dim=8; this run needs dim=16" in capsys.readouterr().err
    assert run_cli(*base, "--model", "mrif-attn", *FAST, "--activation", "gelu") == 2
    assert "has activation=relu; this run needs activation=gelu" in capsys.readouterr().err

    stale = tmp_path / "stale-sasrec"
    shutil.copytree(sasrec_run, stale)
    record = json.loads((stale / "config.json").read_text())
    record["dataset"]["format_version"] = 1
    (stale / "config.json").write_text(json.dumps(record))
    stale_base = [*base[:-1], stale]
    assert run_cli(*stale_base, "--model", "mrif-attn", *FAST) == 2
    assert "was trained on format_version 1" in capsys.readouterr().err


def test_a_pretrained_run_validated_otherwise_is_warned_about(
    sasrec_run: Path, tiny_dataset_dir: Path, tmp_path
) -> None:
    older = tmp_path / "older-sasrec"
    shutil.copytree(sasrec_run, older)
    record = json.loads((older / "config.json").read_text())
    del record["config"]["train"]["valid_every"]  # written before the field existed
    (older / "config.json").write_text(json.dumps(record))
    args = ["train", "--data", tiny_dataset_dir, "--model", "mrif-attn", *FAST]
    with pytest.warns(UserWarning, match="used valid_every 1, this run uses valid_every 2"):
        assert run_cli(*args, "--out", tmp_path / "a", "--pretrained", older) == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_cli(*args, "--out", tmp_path / "b", "--pretrained", sasrec_run) == 0
    assert not [w for w in caught if "valid_every" in str(w.message)]


def test_unreadable_weights_are_a_clear_error(sasrec_run: Path, tmp_path, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "metrics.json"):
        (broken / name).write_bytes((sasrec_run / name).read_bytes())
    (broken / "weights.safetensors").write_bytes(b"\x00" * 16)
    assert run_cli("evaluate", broken) == 2
    assert "not a readable safetensors weights file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--lr", "nan", "lr must be >= 1e-12; got nan"),
        ("--seed", "-1", "seed must be in [0, 4294967295]; got -1"),
        ("--valid-every", "0", "valid_every must be >= 1; got 0"),
        ("--norm", "middle", "norm must be one of ('post', 'pre'); got 'middle'"),
        ("--positions", "random", "positions must be one of ('forward', 'backward')"),
    ],
)
def test_non_finite_or_negative_values_fail_up_front(
    tiny_dataset_dir, tmp_path, capsys, flag, value, message
) -> None:
    assert run_cli("train", "--data", tiny_dataset_dir, "--out", tmp_path / "r", flag, value) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_switch_flag_takes_on_or_off_only(tiny_dataset_dir, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        run_cli("train", "--data", tiny_dataset_dir, "--out", tmp_path / "r",
                "--embedding-norm", "maybe")  # fmt: skip
    assert "--embedding-norm: expected on or off; got 'maybe'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_sigterm_stops_training_with_one_line_and_leaves_nothing(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    command = [
        sys.executable, "-c", "import sys; from mrif.cli import main; sys.exit(main())",
        "train", "--data", str(tiny_dataset_dir), "--model", "sasrec", "--dim", "8",
        "--max-len", "8", "--epochs", "100000", "--patience", "100000", "--quiet",
        "--out", str(runs / "sasrec"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any("epoch 2/" in log.read_text() for log in runs.glob(".sasrec.*/train.log")):
        assert process.poll() is None and time.monotonic() < deadline, "training never started"
        time.sleep(0.1)

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 143  # 128 + SIGTERM, as the shell reports it
    assert stderr.strip().splitlines()[-1] == "mrif: interrupted"
    assert "Traceback" not in stderr
    assert list(runs.iterdir()) == []  # the work directory went with the run


def test_backward_positions_are_flagged_in_the_run_log(tiny_dataset_dir: Path, tmp_path) -> None:
    out = tmp_path / "backward"
    argv = ["train", "--data", tiny_dataset_dir, "--model", "sasrec", "--out", out, *FAST]
    assert run_cli(*argv, "--positions", "backward") == 0
    assert "positions=backward breaks rule 22" in (out / "train.log").read_text()


def test_softmax_loss_on_mrif_fails_before_pre_training(tiny_dataset_dir, tmp_path, capsys) -> None:
    out = tmp_path / "r"
    argv = ["train", "--data", tiny_dataset_dir, "--model", "mrif-attn", "--out", out, *FAST]
    assert run_cli(*argv, "--loss", "ce") == 2
    err = capsys.readouterr().err
    assert "loss='ce' needs a model that scores every item" in err and "pretrain" not in err
    assert not out.exists()
