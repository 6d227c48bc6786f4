"""Data-parallel training (``mrif.distributed``): two gloo processes on this machine against a
single-process reference that averages the same gradients by hand."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.optim.optimizer import register_optimizer_step_post_hook

from mrif import PAD_ID
from mrif.config import ModelConfig, RunConfig, TrainConfig
from mrif.data.dataset import PreparedDataset
from mrif.distributed import (
    SINGLE_PROCESS,
    DistributedError,
    World,
    _join_group,
    launched_world_size,
    start,
    stop,
)
from mrif.evaluation import score_sampled
from mrif.models import build_model
from mrif.runs import _training_fingerprint, evaluate_run
from mrif.training import fit, make_optimizer, seed_everything, train_epoch, training_inputs

MODEL = ModelConfig(dim=8, max_len=8, dropout=0.0)
BATCH = 8
SIZE = 2


def run_in_processes(worker: Callable[..., Any], tmp_path: Path, *args: Any) -> list[Any]:
    """``worker(world, *args)`` in ``SIZE`` spawned processes that meet through a file (gloo
    then talks over loopback); returns what each rank returned, in rank order."""
    mp.spawn(_process_entry, args=(worker, str(tmp_path), args), nprocs=SIZE, join=True)
    return [pickle.loads((tmp_path / f"rank{rank}.pkl").read_bytes()) for rank in range(SIZE)]


def _process_entry(rank: int, worker: Callable[..., Any], tmp: str, args: tuple) -> None:
    torch.set_num_threads(1)
    _join_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=SIZE)
    world = World(rank, SIZE, rank)
    try:
        result = worker(world, *args)
        Path(tmp, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    finally:
        stop(world)  # a no-op if the worker left the group itself


def _gloo_threads() -> int:
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text())
        except FileNotFoundError:  # a thread that ended while we looked
            continue
    return sum(name.startswith("pt_gloo") for name in names)


def _step_then_leave(world: World) -> tuple[int, int]:
    model = torch.nn.Linear(3, 1)
    model(torch.ones(2, 3)).sum().backward()
    world.average_gradients(model.parameters())
    make_optimizer(model, 0.01).step()  # the first step imports torch._dynamo
    while_joined = _gloo_threads()
    stop(world)
    return while_joined, _gloo_threads()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_leaving_the_group_after_training_ends_its_threads(tmp_path: Path) -> None:
    """Threads left running abort the process at exit, now and then, after a good run."""
    for while_joined, after_leaving in run_in_processes(_step_then_leave, tmp_path):
        assert while_joined > 0
        assert after_leaving == 0


def _gradients_of_rank(world: World) -> dict[str, Any]:
    shared = torch.nn.Parameter(torch.zeros(3))
    only_rank1 = torch.nn.Parameter(torch.zeros(2))
    never = torch.nn.Parameter(torch.zeros(1))
    shared.grad = torch.tensor([1.0, 2.0, 3.0]) * (world.rank + 1)
    if world.rank == 1:
        only_rank1.grad = torch.tensor([4.0, -4.0])
    world.average_gradients([shared, only_rank1, never])
    return {"shared": shared.grad, "only_rank1": only_rank1.grad, "never": never.grad}


def test_gradients_are_averaged_and_a_gradient_on_any_rank_counts(tmp_path: Path) -> None:
    results = run_in_processes(_gradients_of_rank, tmp_path)
    for result in results:
        assert torch.equal(result["shared"], torch.tensor([1.5, 3.0, 4.5]))
        assert torch.equal(result["only_rank1"], torch.tensor([2.0, -2.0]))
        assert result["never"] is None


def _one_epoch(world: World, dataset_dir: str, model_name: str) -> dict[str, Any]:
    dataset = PreparedDataset.load(Path(dataset_dir))
    seed_everything(world.rank)  # other initial weights on rank 1: the broadcast must fix it
    model = build_model(model_name, dataset.n_items, MODEL, dataset.n_users)
    world.broadcast_parameters(model)
    examples, sampler = training_inputs(dataset, MODEL.max_len)
    all_batches = list(examples.batches(BATCH, np.random.default_rng(0)))
    batches = world.shard(all_batches, cost=lambda batch: batch.cells)
    negatives = torch.Generator().manual_seed(world.seed_for(0))
    optimizer = make_optimizer(model, 0.01)
    loss = train_epoch(model, batches, sampler, optimizer, negatives, "bce", world)
    return {"loss": loss, "state": model.state_dict()}


def _reference_epoch(dataset: PreparedDataset, model_name: str) -> dict[str, Any]:
    """The same epoch in one process: each round's batches one after the other, their
    gradients averaged by hand, then one optimiser step."""
    seed_everything(0)
    model = build_model(model_name, dataset.n_items, MODEL, dataset.n_users)
    examples, sampler = training_inputs(dataset, MODEL.max_len)
    batches = list(examples.batches(BATCH, np.random.default_rng(0)))
    worlds = [World(rank, SIZE, rank) for rank in range(SIZE)]
    shards = [world.shard(batches, cost=lambda batch: batch.cells) for world in worlds]
    generators = [torch.Generator().manual_seed(world.seed_for(0)) for world in worlds]
    optimizer = make_optimizer(model, 0.01)
    model.train()
    loss_sum, n_steps = 0.0, 0
    for round_batches in zip(*shards, strict=True):
        gradients = []
        for batch, generator in zip(round_batches, generators, strict=True):
            model.zero_grad(set_to_none=True)
            inputs, positives = torch.from_numpy(batch.inputs), torch.from_numpy(batch.positives)
            users = torch.from_numpy(batch.users)
            negatives = sampler.sample(users, inputs.shape[1], generator)
            loss = model.loss(inputs, positives, negatives, users)
            loss.backward()
            gradients.append(
                {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            )
            steps = int((inputs != PAD_ID).sum())
            loss_sum, n_steps = loss_sum + loss.item() * steps, n_steps + steps
        for name, param in model.named_parameters():
            present = [g[name] for g in gradients if name in g]  # a missing one counts zeros
            param.grad = sum(present) / SIZE if present else None
        optimizer.step()
    return {"loss": loss_sum / n_steps, "state": model.state_dict()}


@pytest.mark.parametrize("model_name", ["sasrec", "bpr", "mrif-attn"])
def test_a_distributed_epoch_takes_the_steps_of_averaged_gradients(
    tiny_dataset_dir: Path, tiny_dataset: PreparedDataset, tmp_path: Path, model_name: str
) -> None:
    results = run_in_processes(_one_epoch, tmp_path, str(tiny_dataset_dir), model_name)
    expected = _reference_epoch(tiny_dataset, model_name)

    for name, tensor in results[0]["state"].items():
        assert torch.equal(tensor, results[1]["state"][name]), f"ranks differ on {name}"
        torch.testing.assert_close(tensor, expected["state"][name], rtol=1e-5, atol=1e-6)
    assert results[0]["loss"] == results[1]["loss"]
    assert results[0]["loss"] == pytest.approx(expected["loss"], rel=1e-6)


def _fit(world: World, dataset_dir: str) -> dict[str, Any]:
    dataset = PreparedDataset.load(Path(dataset_dir))
    seed_everything(world.rank)  # fit starts from rank 0's weights everywhere
    model = build_model("sasrec", dataset.n_items, ModelConfig(dim=8, max_len=8))
    config = TrainConfig(
        epochs=6, patience=2, valid_every=1, lr=0.05, batch_size=BATCH, eval_batch_size=8
    )
    steps = []
    hook = register_optimizer_step_post_hook(lambda *_: steps.append(1))
    try:
        result = fit(model, dataset, config, world=world)
    finally:
        hook.remove()

    scored_rows = []  # the validation users this rank scores itself
    score_candidates = model.candidate_scores

    def counting(history: torch.Tensor, *args: Any) -> torch.Tensor:
        scored_rows.append(len(history))
        return score_candidates(history, *args)

    model.candidate_scores = counting  # type: ignore[method-assign]
    again = score_sampled(model, dataset, "valid", batch_size=8, world=world).metrics
    return {"history": result.history, "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "best_valid": result.best_valid, "again": again,
            "steps": len(steps), "scored_rows": sum(scored_rows),
            "state": model.state_dict()}  # fmt: skip


def test_distributed_fit_shares_the_work_and_keeps_ranks_identical(
    tiny_dataset_dir: Path, tiny_dataset: PreparedDataset, tmp_path: Path
) -> None:
    results = run_in_processes(_fit, tmp_path, str(tiny_dataset_dir))
    first, second = results
    assert first["history"] == second["history"]
    assert first["best_epoch"] == second["best_epoch"]
    for name, tensor in first["state"].items():
        assert torch.equal(tensor, second["state"][name]), f"ranks differ on {name}"

    # Each rank takes half of every epoch's batches (rounded up: the odd one wraps around).
    examples, _ = training_inputs(tiny_dataset, 8)
    n_batches = len(list(examples.batches(BATCH, np.random.default_rng(0))))
    assert n_batches % SIZE == 1, "the tiny set should leave one batch to wrap around"
    per_rank = first["epochs_run"] * (n_batches + 1) // SIZE
    assert first["steps"] == second["steps"] == per_rank

    # Validation: each rank scores its own batches, and the gathered scores give every rank
    # the metrics of one process scoring every user with the selected weights.
    assert first["scored_rows"] > 0 and second["scored_rows"] > 0
    assert first["scored_rows"] + second["scored_rows"] == len(tiny_dataset.eval_users)
    model = build_model("sasrec", tiny_dataset.n_items, ModelConfig(dim=8, max_len=8))
    model.load_state_dict(first["state"])
    alone = score_sampled(model, tiny_dataset, "valid", batch_size=8).metrics
    assert first["best_valid"] == second["best_valid"] == alone
    assert first["again"] == second["again"] == alone


def _nan_on_rank_1(world: World, dataset_dir: str) -> str:
    dataset = PreparedDataset.load(Path(dataset_dir))
    model = build_model("sasrec", dataset.n_items, MODEL)
    if world.rank == 1:
        real_loss = model.loss
        model.loss = lambda *args: real_loss(*args) * float("nan")  # type: ignore[method-assign]
    try:
        fit(model, dataset, TrainConfig(epochs=2, batch_size=BATCH), world=world)
    except FloatingPointError as error:
        return str(error)
    return "trained"


def test_a_non_finite_loss_on_one_process_stops_every_process(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    results = run_in_processes(_nan_on_rank_1, tmp_path, str(tiny_dataset_dir))
    expected = "train: epoch 1, step 1: loss became non-finite on 1 of 2 processes; try a lower lr"
    assert results == [expected, expected]


def _failing_on_rank_1(world: World) -> dict[str, str]:
    outcome = {}
    try:
        with world.fail_together("checking the run"):
            if world.rank == 1:
                raise ValueError("no such directory")
    except Exception as error:
        outcome["failed"] = f"{type(error).__name__}: {error}"
    try:
        world.check_same({"train.lr": str(0.001 * (1 + world.rank)), "model.dim": "8"})
    except Exception as error:
        outcome["differ"] = f"{type(error).__name__}: {error}"
    world.check_same({"train.lr": "0.001", "model.dim": "8"})  # equal values pass
    return outcome


def test_a_failure_on_one_process_stops_every_process(tmp_path: Path) -> None:
    first, second = run_in_processes(_failing_on_rank_1, tmp_path)
    assert second["failed"] == "ValueError: no such directory"
    assert first["failed"] == (
        "DistributedError: checking the run failed on process 1; see its error"
    )
    for outcome in (first, second):
        assert outcome["differ"].startswith("DistributedError: the processes disagree on train.lr:")


def test_processes_must_share_what_changes_the_result(tiny_dataset: PreparedDataset) -> None:
    def fingerprint(pretrained: bool = False, **train: object) -> dict[str, str]:
        config = RunConfig().with_overrides({}, train)
        record = {"model": "mrif-attn", "config": config.to_dict(), "mrif_version": "0.1.0"}
        return _training_fingerprint(record, tiny_dataset, pretrained)

    base = fingerprint()
    assert base["data source sha256"] == tiny_dataset.meta["source"]["sha256"]
    source = tiny_dataset.meta["source"]["path"]
    assert not any(source in value for value in base.values())  # machines keep data anywhere
    assert fingerprint(threads=4) == fingerprint(item_chunk=7) == base  # speed only
    changed = {"lr": 0.01, "eval_batch_size": 7, "seed": 3}  # the validation split needs 7 too
    for key, value in changed.items():
        assert [k for k in base if fingerprint(**{key: value})[k] != base[k]] == [f"train.{key}"]
    assert [k for k in base if fingerprint(pretrained=True)[k] != base[k]] == ["--pretrained given"]


def _interrupted_while_waiting(world: World, tmp: str) -> bool | None:
    """Rank 0 waits at a barrier that rank 1 never reaches unless rank 0 stays stuck; Ctrl-C
    arrives while it waits. Returns, on rank 0, whether it stopped before rank 1 gave in."""
    go, released = Path(tmp, "go"), Path(tmp, "released")
    if world.rank == 1:
        for _ in range(400):  # up to 20 s for rank 0 to give up waiting
            if go.exists():
                return None
            time.sleep(0.05)
        released.touch()  # rank 0 is stuck: let it through so that the test ends
        world.barrier()
        return None
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        world.barrier()
    except KeyboardInterrupt:
        stopped_early = not released.exists()
        go.touch()
        return stopped_early
    return False


def test_ctrl_c_stops_a_process_waiting_for_the_others(tmp_path: Path) -> None:
    results = run_in_processes(_interrupted_while_waiting, tmp_path, str(tmp_path))
    assert results[0] is True


def test_shards_cover_every_item_and_are_the_same_length() -> None:
    items = list(range(11))
    shards = [World(rank, 4).shard(items) for rank in range(4)]
    assert {len(shard) for shard in shards} == {3}
    assert set().union(*shards) == set(items)
    assert SINGLE_PROCESS.shard(items) == items
    assert World(1, 4).shard([]) == []


def test_each_step_pairs_batches_of_similar_cost() -> None:
    rng = np.random.default_rng(0)
    costs = rng.permutation(np.arange(20) * 10).tolist() + [5]  # 21 items: a short last round
    shards = [World(rank, 2).shard(costs, cost=float) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 11
    assert set(shards[0]) | set(shards[1]) == set(costs)
    steps = list(zip(*shards, strict=True))
    # From the dearest, 190 180 ... 10 5 0 pair up as (190, 180), ..., (10, 5), and the
    # cheapest, 0, fills the short round on both processes.
    assert sorted(abs(a - b) for a, b in steps) == [0, 5] + [10] * 9
    assert (0, 0) in steps
    first_seen = [min(costs.index(a), costs.index(b)) for a, b in steps]
    assert first_seen == sorted(first_seen)  # rounds keep the epoch's shuffled order


def test_each_rank_draws_from_its_own_seed() -> None:
    seeds = [World(rank, 8).seed_for(5) for rank in range(8)]
    assert seeds[0] == 5
    assert len(set(seeds)) == 8
    assert all(0 <= seed < 2**63 for seed in seeds)
    assert World(3, 8).seed_for(5) != World(3, 8).seed_for(6)


def test_world_size_comes_from_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(RuntimeError, match="WORLD_SIZE must be a whole number; got 'two'"):
        launched_world_size()


def _mrif(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mrif", *map(str, args)], capture_output=True, text=True,
        env=env, timeout=300,
    )  # fmt: skip


def test_only_train_runs_as_several_processes(tmp_path: Path, tiny_dataset_dir: Path) -> None:
    inherited = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
    launched = {**inherited, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    done = _mrif("reproduce", "--data", tiny_dataset_dir, "--out", tmp_path / "r", env=launched)
    assert done.returncode == 2
    assert "only mrif train can be launched with torchrun" in done.stderr
    assert not (tmp_path / "r").exists()

    out = tmp_path / "run"
    done = _mrif("train", "--data", tiny_dataset_dir, "--out", out, env=launched)
    assert done.returncode == 2
    assert "launch variables are not set: MASTER_ADDR, MASTER_PORT; launch with torchrun" in (
        done.stderr
    )
    assert not out.exists()


def test_torchrun_trains_one_run_on_two_processes(tmp_path: Path, tiny_dataset_dir: Path) -> None:
    out = tmp_path / "runs" / "mrif"
    fast = ["--dim", "8", "--max-len", "8", "--epochs", "2", "--pretrain-epochs", "1"]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "mrif", "train", "--data", str(tiny_dataset_dir), "--model", "mrif-attn",
        "--out", str(out), *fast,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    printed = json.loads(done.stdout)  # one process prints the test metrics
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed["test"] == metrics["test"]
    assert metrics["environment"]["processes"] == 2
    assert done.stderr.count("training mrif-attn on") == 1  # the other rank logs warnings only
    assert sorted(p.name for p in out.parent.iterdir()) == ["mrif"]  # no half-written runs
    assert evaluate_run(out) == metrics["test"]


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_machines_with_different_settings_are_refused(
    tmp_path: Path, tiny_dataset_dir: Path
) -> None:
    """Two torchrun "machines" on loopback, the second given another learning rate."""
    port = _free_loopback_port()
    out = tmp_path / "runs" / "sasrec"

    def machine(rank: int, *flags: str) -> subprocess.Popen:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
            "--nproc-per-node", "1", "--node-rank", str(rank), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "mrif", "train",
            "--data", str(tiny_dataset_dir), "--model", "sasrec", "--out", str(out),
            "--dim", "8", "--max-len", "8", "--epochs", "2", *flags,
        ]  # fmt: skip
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    machines = [machine(0), machine(1, "--lr", "0.01")]
    outcomes = [process.communicate(timeout=300) for process in machines]
    for process, (_, stderr) in zip(machines, outcomes, strict=True):
        assert process.returncode != 0
        assert "mrif: error: the processes disagree on train.lr: every machine" in stderr
    assert not out.parent.exists() or not any(out.parent.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without")
def test_cuda_without_a_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    launched = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**launched, "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DistributedError, match="torch sees no CUDA device; pass --device cpu"):
        start("cuda")
    assert not dist.is_initialized()
