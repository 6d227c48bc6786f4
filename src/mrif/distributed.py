"""Data-parallel training across processes and machines with ``torch.distributed``.

``mrif train`` launched by ``torchrun`` trains one model in ``WORLD_SIZE`` processes. Every
process holds the whole prepared dataset and a full copy of the model; each step gives every
process one of the epoch's batches, and after every backward pass the gradients are averaged
across processes, so all copies take the same optimiser step and stay identical. Validation
batches are split over the processes and their scores gathered, so every process sees the same
metrics and stops at the same epoch. Only the first process (rank 0) tests the model and
writes the run directory. Before training, the processes agree on their checks
(``World.fail_together``) and on the data and settings (``World.check_same``), so that a
mistake on one machine stops all of them with its reason instead of a hang.

Choices, documented in the README:

* ``batch_size`` is per process: one optimiser step sees ``world_size x batch_size`` users.
  The learning rate is not rescaled.
* Each step's batches (one per process) are of similar size, so no process waits long for
  the others; when the epoch's batch count does not divide by the number of processes, the
  round of the smallest batches repeats some of them, so every process takes the same number
  of steps.
* Each process draws its own training negatives and dropout masks, from a seed derived from
  ``(seed, rank)``; rank 0 uses the run's seed itself.
* CPU processes talk over gloo, GPU processes over NCCL, one GPU per process
  (``LOCAL_RANK``).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

T = TypeVar("T")

COLLECTIVE_TIMEOUT = timedelta(hours=1)
"""How long a process waits for the others at a collective, e.g. while the first process on
its machine downloads and prepares the dataset."""

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""What ``torchrun`` sets for every process it starts."""


class DistributedError(RuntimeError):
    """The launch environment does not describe a usable process group."""


@dataclass(frozen=True)
class World:
    """This process's place among the processes training one model.

    The default is a single process, for which every collective is a no-op.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collectives put their tensors: NCCL needs the GPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    def seed_for(self, seed: int) -> int:
        """The seed of this process's own random draws: ``seed`` itself on rank 0."""
        if self.rank == 0:
            return seed
        state = np.random.SeedSequence([seed, self.rank]).generate_state(1, np.uint64)
        return int(state[0] >> np.uint64(1))  # torch seeds must fit a signed 64-bit int

    def shard(self, items: Sequence[T], cost: Callable[[T], float] | None = None) -> list[T]:
        """This process's share of ``items``: the ``rank``-th item of every round of ``size``
        items, so every process gets ``ceil(len(items) / size)``; a short last round repeats
        its own items.

        Without ``cost`` a round is ``size`` consecutive items. With it, a round holds items of
        similar cost, so that no process waits long for the others at the gradient exchange
        that ends each step; the short round is the cheapest, and the rounds come in the order
        of their first item in ``items``.

        >>> [World(rank, 3).shard("abcdefg") for rank in range(3)]
        [['a', 'd', 'g'], ['b', 'e', 'g'], ['c', 'f', 'g']]
        >>> [World(rank, 2).shard([5, 1, 6, 2, 0], cost=float) for rank in range(2)]
        [[6, 2, 0], [5, 1, 0]]
        """
        if not self.is_distributed:
            return list(items)
        positions = list(range(len(items)))
        if cost is not None:  # the dearest first, so that the short round is the cheapest
            positions.sort(key=lambda position: cost(items[position]), reverse=True)
        rounds = [positions[i : i + self.size] for i in range(0, len(positions), self.size)]
        rounds.sort(key=min)
        return [items[members[self.rank % len(members)]] for members in rounds]

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Add ``tensor`` up across processes, in place; every process gets the same sum."""
        if self.is_distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def _agree(self, tensor: torch.Tensor, op: dist.ReduceOp.RedOpType) -> torch.Tensor:
        """An all-reduce for the coordination points, where one process may wait long for
        another (still preparing data, say): interruptible while it waits."""
        _wait_interruptibly(dist.all_reduce(tensor, op=op, async_op=True))
        return tensor

    def sum_array(self, array: np.ndarray) -> np.ndarray:
        """``sum_`` for a NumPy array; a new array when distributed."""
        if not self.is_distributed:
            return array
        return self.sum_(torch.from_numpy(array).to(self.device)).cpu().numpy()

    @contextmanager
    def fail_together(self, what: str) -> Iterator[None]:
        """Run ``what`` (checks, loading) on every process, then agree on the outcome: if it
        failed anywhere, it fails everywhere, instead of leaving the others waiting at their
        next collective. A process re-raises its own error; the others raise
        ``DistributedError`` naming the failed ranks."""
        error: Exception | None = None
        ranks: list[int] = []
        try:
            yield
        except Exception as caught:  # re-raised below, after the others have heard of it
            error = caught
        if self.is_distributed:
            failed = torch.zeros(self.size, device=self.device)
            failed[self.rank] = float(error is not None)
            flags = self._agree(failed, dist.ReduceOp.SUM).tolist()
            ranks = [rank for rank, flag in enumerate(flags) if flag]
        if error is not None:
            raise error
        if ranks:
            raise DistributedError(
                f"{what} failed on process {', '.join(map(str, ranks))}; see its error"
            )

    def check_same(self, values: dict[str, str]) -> None:
        """Fail on every process unless all hold the same value under every key; the error
        names the keys whose values differ (compared by a 48-bit digest of each)."""
        if not self.is_distributed:
            return
        keys = sorted(values)
        digests = [
            float(int.from_bytes(hashlib.sha256(values[key].encode()).digest()[:6], "big"))
            for key in keys
        ]  # 48 bits: exact in float64, which every backend reduces
        mine = torch.tensor(digests + [-d for d in digests], dtype=torch.float64)
        extremes = mine.to(self.device, copy=True)  # the largest of both halves: max and min
        self._agree(extremes, dist.ReduceOp.MAX)
        mismatch = extremes.cpu() != mine
        differ = mismatch[: len(keys)] | mismatch[len(keys) :]
        names = [key for key, bad in zip(keys, differ.tolist(), strict=True) if bad]
        if names:
            raise DistributedError(
                f"the processes disagree on {', '.join(names)}: every machine must train on "
                "the same prepared data with the same command"
            )

    def average_gradients(
        self, parameters: Iterable[torch.nn.Parameter], loss_is_finite: bool = True
    ) -> int:
        """Replace each parameter's gradient by its mean over processes, in one collective,
        and return how many processes had a non-finite loss (0 on a single process).

        A parameter gets a gradient if any process computed one (the others count zeros), so
        the optimiser updates the same parameters everywhere.
        """
        if not self.is_distributed:
            return 0
        params = [p for p in parameters if p.requires_grad]
        if not params:
            return 0
        device = params[0].device
        pieces = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params
        ]
        flags = [float(p.grad is not None) for p in params] + [float(not loss_is_finite)]
        flat = torch.cat([*pieces, torch.tensor(flags, dtype=pieces[0].dtype, device=device)])
        self.sum_(flat)
        *has_grads, n_failed = flat[-len(flags) :].tolist()
        offset = 0
        for param, has_grad in zip(params, has_grads, strict=True):
            size = param.numel()
            if has_grad:
                param.grad = (flat[offset : offset + size] / self.size).view_as(param)
            offset += size
        return int(n_failed)

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's parameters and buffers."""
        if not self.is_distributed:
            return
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)

    def barrier(self) -> None:
        if self.is_distributed:
            _wait_interruptibly(dist.barrier(async_op=True))

    @contextmanager
    def local_main_first(self) -> Iterator[None]:
        """Run the body on each machine's first process before the others, so that a
        download or preparation into the machine's cache happens once."""
        if self.local_rank != 0:
            self.barrier()
        try:
            yield
        finally:
            if self.local_rank == 0:
                self.barrier()


SINGLE_PROCESS = World()

POLL_SECONDS = 0.05
"""How often a process waiting at a coordination point lets Python handle signals."""


def _wait_interruptibly(work: dist.Work | None) -> None:
    """Wait for an asynchronous collective in short sleeps. A blocking wait inside torch
    defers Python's signal handlers, so Ctrl-C or SIGTERM (``mrif.interrupts``) would not
    stop a process, nor clean up its run, until the others arrived."""
    if work is None:
        return
    while not work.is_completed():
        time.sleep(POLL_SECONDS)
    work.wait()  # raises what the collective failed with, if anything


def launched_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun``; 1 when this process was started alone."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(text)
    except ValueError:
        raise DistributedError(f"WORLD_SIZE must be a whole number; got {text!r}") from None
    if size < 1:
        raise DistributedError(f"WORLD_SIZE must be at least 1; got {size}")
    return size


def start(device: str) -> World:
    """Join the process group that ``torchrun`` describes in the environment.

    Returns ``SINGLE_PROCESS`` without touching ``torch.distributed`` when ``WORLD_SIZE`` is
    unset or 1. On ``cuda`` each process takes GPU ``LOCAL_RANK`` and NCCL; on ``cpu``, gloo.

    Raises:
        DistributedError: a launch variable is missing or malformed, or there are fewer GPUs
            on this machine than processes asking for one.
    """
    size = launched_world_size()
    if size == 1:
        return SINGLE_PROCESS
    missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE is {size} but these launch variables are not set: "
            f"{', '.join(missing)}; launch with torchrun (see the README, 'Training on "
            "several processes or machines')"
        )
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    except ValueError as error:
        raise DistributedError(f"RANK and LOCAL_RANK must be whole numbers: {error}") from None
    if device != "cuda":
        if not dist.is_initialized():
            _join_group("gloo")
        return World(rank, size, local_rank, "cpu")
    if not torch.cuda.is_available():
        raise DistributedError("device is 'cuda' but torch sees no CUDA device; pass --device cpu")
    if local_rank >= torch.cuda.device_count():
        raise DistributedError(
            f"process {rank} wants GPU {local_rank}, but this machine has "
            f"{torch.cuda.device_count()}; start at most that many processes per machine"
        )
    gpu = torch.device("cuda", local_rank)
    torch.cuda.set_device(gpu)
    if not dist.is_initialized():
        _join_group("nccl", device_id=gpu)
    return World(rank, size, local_rank, f"cuda:{local_rank}")


def _join_group(backend: str, **options: Any) -> None:
    """``dist.init_process_group`` with ``COLLECTIVE_TIMEOUT``, made safe to leave.

    ``torch.distributed._shard``, imported by ``torch._dynamo``, which the first optimiser
    step imports, takes references to the process group that exists when it is imported.
    ``destroy_process_group`` then cannot free the group, whose gloo threads live on into
    interpreter shutdown and, releasing a tensor there, abort the process now and then
    ("terminate called without an active exception"). Imported before the group exists,
    it holds nothing.
    """
    import torch._dynamo  # noqa: F401

    dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT, **options)


def stop(world: World) -> None:
    """Leave the process group ``start`` joined, if any."""
    if world.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "SINGLE_PROCESS",
    "DistributedError",
    "World",
    "launched_world_size",
    "start",
    "stop",
]
