"""``mrif reproduce``: every model for every seed on one dataset, then the paper-style report.

Runs live in ``OUT/runs/MODEL-sSEED``. A run whose directory already holds a finished run with
the same config is reused, so an interrupted reproduction resumes where it stopped. MRIF runs
take their pre-trained extractor from the SASRec run of the same seed when SASRec is part of
the reproduction (identical to pre-training inline, see ``runs.train_run``), which saves one
SASRec training per MRIF variant.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mrif.allocator import worker_allocator_settings
from mrif.config import SPEED_ONLY, RunConfig, recorded_setting
from mrif.data.dataset import FORMAT_VERSION
from mrif.data.registry import resolve_dataset
from mrif.interrupts import raise_keyboard_interrupt
from mrif.models import MODEL_NAMES, MRIF_NAMES
from mrif.run_dir import recorded_format_version
from mrif.runs import RunError, train_run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedRun:
    model: str
    seed: int
    out_dir: Path
    pretrained: Path | None

    @property
    def label(self) -> str:
        return f"{self.model} seed {self.seed}"


def parse_models(text: str | None) -> list[str]:
    """``"sasrec,mrif-attn"`` -> model names in table order; None or ``all`` -> every model."""
    if text is None or text.strip() == "all":
        return list(MODEL_NAMES)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown or not names:
        raise ValueError(
            f"--models: unknown model {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(MODEL_NAMES)}"
        )
    return sorted(set(names), key=MODEL_NAMES.index)


RUN_ORDER = (
    "sasrec", "mrif-attn", "mrif-max", "mrif-avg", "caser", "din",
    "lstm4rec", "gru4rec", "ncf", "bpr", "pop",
)  # fmt: skip
"""The order runs of one seed start in: SASRec first, since the MRIF runs reuse it and wait
for it, then MRIF's variants (started as soon as it ends), then the baselines from the longest
to the shortest run on Amazon Beauty."""


def plan_runs(models: list[str], seeds: list[int], runs_dir: Path) -> list[PlannedRun]:
    """Seed by seed; within a seed in ``RUN_ORDER``.

    Runs start in this order as workers free up, skipping MRIF runs whose SASRec run has not
    finished. Starting SASRec first keeps the MRIF runs from queueing behind it; ending with
    the short runs lets the workers of a parallel reproduction finish close together.
    """
    plan = []
    for seed in seeds:
        for model in sorted(models, key=RUN_ORDER.index):
            pretrained = None
            if model in MRIF_NAMES and "sasrec" in models:
                pretrained = runs_dir / f"sasrec-s{seed}"
            plan.append(PlannedRun(model, seed, runs_dir / f"{model}-s{seed}", pretrained))
    return plan


def reproduce(
    data: str,
    models: list[str],
    seeds: list[int],
    out: Path | str,
    config: RunConfig,
    *,
    jobs: int = 1,
    data_seed: int | None = None,
    progress: bool = False,
) -> dict[str, Path]:
    """Train (or reuse) every planned run, then write the report. Returns the report paths.

    Raises:
        RunError: some runs failed; the report covers the others and the message names them.
    """
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1; got {jobs}")
    if not seeds:
        raise ValueError("--seeds must be at least 1")
    out = Path(out)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    dataset_dir = resolve_dataset(data, seed=0 if data_seed is None else data_seed)
    if jobs > 1 and not config.train.threads:
        config = config.with_overrides({}, {"threads": max(1, (os.cpu_count() or 1) // jobs)})

    plan = plan_runs(models, seeds, runs_dir)
    configs = {run: config.with_overrides({}, {"seed": run.seed}) for run in plan}
    finished = {run for run in plan if _reusable(run, configs[run], dataset_dir)}
    todo = [run for run in plan if run not in finished]
    for run in todo:  # work directories of interrupted runs (see runs.train_run)
        for stale in runs_dir.glob(f".{run.out_dir.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
    logger.info("reproduce: %d runs planned, %d reused, %d to train, %d at a time",
                len(plan), len(finished), len(todo), jobs)  # fmt: skip

    tracker = _Progress(len(plan), len(finished), progress)
    failed = _execute(todo, configs, str(dataset_dir), data_seed, jobs, finished, tracker)
    tracker.close()

    # Imported here: the report's statistics stack (scipy) would otherwise load again in
    # every spawned worker, which imports this module to find its target.
    from mrif.report import write_report

    paths = write_report(out) if len(finished) else {}
    if failed:
        lines = "\n".join(f"  {run.label}: {reason}" for run, reason in failed.items())
        raise RunError(f"{len(failed)} of {len(plan)} runs failed:\n{lines}")
    return paths


def _reusable(run: PlannedRun, config: RunConfig, dataset_dir: Path) -> bool:
    """True if ``run.out_dir`` holds this exact run finished; an error if it holds another."""
    if not (run.out_dir / "metrics.json").exists():
        return False
    record = json.loads((run.out_dir / "config.json").read_text())
    theirs = record.get("config", {})
    ours = config.to_dict()
    differences = [
        f"{section}.{key}"
        for section in ("model", "train")
        for key in ours[section]
        if (section, key) not in SPEED_ONLY  # a finished run is reused whatever they were
        and recorded_setting(theirs, section, key) != ours[section][key]
    ]
    if record.get("model") != run.model:
        differences.insert(0, "model")
    metrics = json.loads((run.out_dir / "metrics.json").read_text())
    if metrics.get("environment", {}).get("processes", 1) != 1:
        differences.append("processes (a data-parallel run)")
    their_dataset = record.get("dataset", {})
    if their_dataset.get("path") != str(dataset_dir.resolve()):
        differences.insert(0, "dataset")
    elif recorded_format_version(record) != FORMAT_VERSION:
        differences.insert(0, "dataset format_version (other evaluation negatives)")
    if differences:
        raise RunError(
            f"{run.out_dir} holds a finished run that differs in {', '.join(differences)}; "
            "use another --out, or delete that run to train it again"
        )
    return True


def _execute(
    todo: list[PlannedRun],
    configs: dict[PlannedRun, RunConfig],
    data: str,
    data_seed: int | None,
    jobs: int,
    finished: set[PlannedRun],
    tracker: _Progress,
) -> dict[PlannedRun, str]:
    """Run ``todo`` respecting dependencies (an MRIF run waits for its SASRec run).

    With ``jobs > 1`` each run gets its own worker process; an interrupt (Ctrl-C or SIGTERM)
    stops the workers too, and their unfinished runs leave nothing behind but hidden work
    directories, which the next reproduction removes.
    """
    failed: dict[PlannedRun, str] = {}
    by_dir = {run.out_dir: run for run in list(finished) + todo}
    pending = list(todo)

    def dependency(run: PlannedRun) -> PlannedRun | None:
        return by_dir.get(run.pretrained) if run.pretrained is not None else None

    def blocked(run: PlannedRun) -> str | None:
        needed = dependency(run)
        return None if needed is None or needed not in failed else f"{needed.label} failed"

    def record(run: PlannedRun, outcome: dict[str, Any] | None, error: str | None) -> None:
        if error is None:
            finished.add(run)
        else:
            failed[run] = error
        tracker.finished(run, outcome, error)

    workers = _Workers(jobs) if jobs > 1 else None
    try:
        while pending or (workers and workers.busy):
            for run in [r for r in pending if blocked(r)]:
                pending.remove(run)
                record(run, None, f"skipped: {blocked(run)}")
            free = jobs - (workers.busy if workers else 0)
            ready = [r for r in pending if dependency(r) in (None, *finished)][:free]
            for run in ready:
                pending.remove(run)
                tracker.started(run)
                args = (data, run, configs[run].to_dict(), data_seed)
                if workers is None:
                    try:
                        record(run, _train_one(*args), None)
                    except Exception as error:  # reported; the other runs go on
                        record(run, None, f"{type(error).__name__}: {error}")
                else:
                    workers.start(run, args)
            if workers and workers.busy:
                record(*workers.wait())
    finally:
        if workers is not None:
            workers.stop()
    return failed


STOP_GRACE_SECONDS = 30.0
"""How long a stopped worker may take to remove its unfinished run before it is killed."""


class _Workers:
    """One spawned process per run, reporting through a queue, with the allocator settings of
    ``mrif.allocator``."""

    def __init__(self, jobs: int) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.results = self.context.Queue()
        self.running: dict[Path, tuple[PlannedRun, BaseProcess]] = {}
        self.previous_sigterm = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)

    @property
    def busy(self) -> int:
        return len(self.running)

    def start(self, run: PlannedRun, args: tuple[Any, ...]) -> None:
        process = self.context.Process(target=_worker, args=(self.results, *args))
        with worker_allocator_settings():
            process.start()
        self.running[run.out_dir] = (run, process)

    def wait(self) -> tuple[PlannedRun, dict[str, Any] | None, str | None]:
        """Block until a run ends; a worker that dies without reporting is a failure too."""
        while True:
            try:
                out_dir, outcome, error = self.results.get(timeout=5)
            except queue.Empty:
                for out_dir, (run, process) in list(self.running.items()):
                    if process.exitcode is not None:
                        del self.running[out_dir]
                        return run, None, f"worker exited with code {process.exitcode}"
                continue
            run, process = self.running.pop(out_dir)
            process.join()
            return run, outcome, error

    def stop(self) -> None:
        """SIGTERM each worker (it removes its unfinished run), then kill any that is still
        inside a long native call after ``STOP_GRACE_SECONDS``."""
        for _, process in self.running.values():
            process.terminate()
        for _, process in self.running.values():
            process.join(STOP_GRACE_SECONDS)
            if process.exitcode is None:
                process.kill()
                process.join()
        self.running.clear()
        signal.signal(signal.SIGTERM, self.previous_sigterm)


def _worker(
    results: Any, data: str, run: PlannedRun, config: dict[str, Any], seed: int | None
) -> None:
    """Body of a worker process: train one run and report how it ended."""
    # Ctrl-C reaches the whole process group: the parent alone decides, and stops workers
    # with one SIGTERM each, which they turn into a clean exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        results.put((run.out_dir, _train_one(data, run, config, seed), None))
    except BaseException as error:  # reported to the parent, which decides what follows
        results.put((run.out_dir, None, f"{type(error).__name__}: {error}"))


def _train_one(
    data: str, run: PlannedRun, config: dict[str, Any], data_seed: int | None
) -> dict[str, Any]:
    """One run; top level so that worker processes can import it."""
    metrics = train_run(
        data, run.model, run.out_dir, RunConfig.from_dict(config), data_seed=data_seed,
        pretrained=run.pretrained, overwrite=run.out_dir.exists(),
    )  # fmt: skip
    return {"test": metrics["test"], "seconds": metrics["timing"]["total_seconds"]}


class _Progress:
    """One log line per started and finished run, and a bar across runs on a terminal."""

    def __init__(self, total: int, reused: int, show_bar: bool) -> None:
        self.total = total
        self.done = reused
        self.started_at = time.perf_counter()
        self.bar = tqdm(total=total, initial=reused, desc="runs", disable=not show_bar)

    def started(self, run: PlannedRun) -> None:
        logger.info("[%d/%d done, %s elapsed] starting %s", self.done, self.total,
                    self._elapsed(), run.label)  # fmt: skip
        self.bar.set_postfix_str(run.label)

    def finished(self, run: PlannedRun, result: dict[str, Any] | None, error: str | None) -> None:
        self.done += 1
        self.bar.update(1)
        if error is not None:
            logger.error("[%d/%d] %s failed: %s", self.done, self.total, run.label, error)
            return
        assert result is not None
        logger.info("[%d/%d done, %s elapsed] %s finished in %.0fs: test hit@10 %.4f ndcg@10 "
                    "%.4f", self.done, self.total, self._elapsed(), run.label, result["seconds"],
                    result["test"]["hit@10"], result["test"]["ndcg@10"])  # fmt: skip

    def _elapsed(self) -> str:
        minutes, seconds = divmod(int(time.perf_counter() - self.started_at), 60)
        return f"{minutes}m{seconds:02d}s"

    def close(self) -> None:
        self.bar.close()
