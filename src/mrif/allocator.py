"""Memory-allocator settings for the worker processes of a reproduction.

A training step allocates and frees the same large tensors over and over. glibc's ``malloc``
hands the free top of its heap back to the kernel and serves large requests with fresh
mappings, so each step faults in new pages, which the kernel zeroes first: a five-seed Beauty
reproduction took about 171 million page faults (30,000 a second). With a fixed mmap threshold
of 32 MiB (the upper limit mallopt(3) gives for 64-bit systems) and a trim threshold of 4 GiB,
freed memory stays in the heap for the next step. What is computed does not change, only
where the memory comes from; ``benchmarks/RESULTS.md`` records the time it saves.

glibc reads these settings once, when a process starts, so they apply to spawned workers only.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator, Mapping

TUNABLES_VARIABLE = "GLIBC_TUNABLES"
WORKER_MALLOC_TUNABLES = (
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296"
)


def worker_environment(environ: Mapping[str, str], libc: str | None = None) -> dict[str, str]:
    """Variables to add to ``environ`` for a spawned worker.

    The malloc tunables on Linux with glibc; nothing elsewhere, and nothing when
    ``GLIBC_TUNABLES`` is already set (the user's settings win).

    Args:
        environ: the environment the worker would otherwise inherit.
        libc: the C library's name as ``platform.libc_ver`` gives it; None asks this process.
    """
    if libc is None:
        libc = platform.libc_ver()[0] if sys.platform.startswith("linux") else ""
    if libc != "glibc" or TUNABLES_VARIABLE in environ:
        return {}
    return {TUNABLES_VARIABLE: WORKER_MALLOC_TUNABLES}


@contextlib.contextmanager
def worker_allocator_settings() -> Iterator[None]:
    """Inside the block, processes started (spawned) inherit ``worker_environment``; this
    process's own environment is restored after."""
    added = worker_environment(os.environ)
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)
