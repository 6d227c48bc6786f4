"""The allocator settings handed to a reproduction's spawned workers."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from mrif import reproduce as reproduce_module
from mrif.allocator import (
    TUNABLES_VARIABLE,
    WORKER_MALLOC_TUNABLES,
    worker_allocator_settings,
    worker_environment,
)
from mrif.reproduce import PlannedRun


def test_glibc_workers_get_the_malloc_tunables() -> None:
    added = worker_environment({}, libc="glibc")
    assert added == {TUNABLES_VARIABLE: WORKER_MALLOC_TUNABLES}
    settings = dict(item.split("=") for item in WORKER_MALLOC_TUNABLES.split(":"))
    # mallopt(3) gives 32 MiB as the mmap threshold's upper limit on 64-bit systems.
    assert int(settings["glibc.malloc.mmap_threshold"]) <= 32 * 2**20
    assert int(settings["glibc.malloc.trim_threshold"]) >= 2**30


def test_tunables_the_user_set_are_kept() -> None:
    assert worker_environment({TUNABLES_VARIABLE: "glibc.malloc.arena_max=1"}, "glibc") == {}


def test_other_c_libraries_get_nothing() -> None:
    assert worker_environment({}, libc="") == {}
    assert worker_environment({}, libc="musl") == {}


def _report_tunables(results: Any) -> None:
    results.put(os.environ.get(TUNABLES_VARIABLE))


def test_a_spawned_process_inherits_the_settings_and_the_parent_gets_its_own_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TUNABLES_VARIABLE, raising=False)
    expected = worker_environment(os.environ).get(TUNABLES_VARIABLE)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_report_tunables, args=(results,))
    with worker_allocator_settings():
        process.start()
    process.join(60)
    assert results.get(timeout=5) == expected
    assert TUNABLES_VARIABLE not in os.environ


def test_reproduction_workers_start_inside_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started_with: list[str | None] = []

    class RecordingProcess:
        """Stands in for a worker process: records the environment it would start with."""

        def __init__(self, target: Any, args: tuple[Any, ...]) -> None:
            pass

        def start(self) -> None:
            started_with.append(os.environ.get(TUNABLES_VARIABLE))

    monkeypatch.delenv(TUNABLES_VARIABLE, raising=False)
    monkeypatch.setattr(
        "mrif.allocator.worker_environment", lambda environ: {TUNABLES_VARIABLE: "x"}
    )
    workers = reproduce_module._Workers(jobs=2)
    try:
        monkeypatch.setattr(workers.context, "Process", RecordingProcess)
        workers.start(PlannedRun("pop", 0, tmp_path / "pop-s0", None), ())
    finally:
        workers.running.clear()
        workers.stop()
    assert started_with == ["x"]
    assert TUNABLES_VARIABLE not in os.environ
