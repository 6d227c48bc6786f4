"""SIGTERM handled like Ctrl-C, so that an interrupted command cleans up after itself."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program was (once the running C or Rust call returns)."""

    exit_code = 128 + signal.SIGTERM


def raise_keyboard_interrupt(signum: int, frame: object) -> None:
    """Signal handler: turn SIGTERM into ``Terminated`` at the current line."""
    raise Terminated(f"signal {signum}")


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The shell's code for a process stopped by the signal: 143 for SIGTERM, 130 for Ctrl-C."""
    return interrupt.exit_code if isinstance(interrupt, Terminated) else 128 + signal.SIGINT


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
        # None: the previous handler was not installed from Python; the default is closest.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
