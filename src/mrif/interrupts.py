"""SIGTERM handled like Ctrl-C, so that an interrupted command cleans up after itself."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


def raise_keyboard_interrupt(signum: int, frame: object) -> None:
    """Signal handler: turn the signal into ``KeyboardInterrupt`` at the current line."""
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises ``KeyboardInterrupt`` (outside the main thread, where
    handlers cannot be installed, nothing changes); the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
