"""What counts as bad raw input, and how it is reported.

* ``DataFormatError``: a file cannot be read; the message names the file, the line and the
  reason.
* ``SkippedLines``: what a reader dropped when asked to skip bad lines instead of failing.
* The timestamp range every reader enforces: unix seconds in ``[MIN_TIMESTAMP,
  MAX_TIMESTAMP)``, that is from 1970-01-01 up to (not including) 2100-01-01 UTC. A negative
  value is refused rather than read as a date before 1970, and a value past 2100 is almost
  always a unit mistake (milliseconds or microseconds read as seconds) rather than a date.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIN_TIMESTAMP = 0  # 1970-01-01T00:00:00Z
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01T00:00:00Z, excluded
TIMESTAMP_RANGE = (
    f"unix seconds must be in [{MIN_TIMESTAMP}, {MAX_TIMESTAMP}), 1970 to 2100 UTC; "
    "a value past 2100 is usually milliseconds"
)
MAX_EXAMPLES = 5  # bad lines quoted in a SkippedLines report


class DataFormatError(ValueError):
    """A raw data file cannot be read; the message names the file, the line and the reason."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class SkippedLines:
    """Lines a reader skipped as bad: how many, and the first few as ``line N: reason``."""

    count: int = 0
    examples: tuple[str, ...] = ()

    def summary(self) -> str:
        """One sentence for a log line or a warning (empty when nothing was skipped)."""
        if not self.count:
            return ""
        first = "; ".join(self.examples)
        return f"skipped {self.count} bad line(s); first: {first}"


def timestamp_out_of_range(seconds: int | float) -> bool:
    """True when ``seconds`` is outside the accepted range (see the module docstring)."""
    return not MIN_TIMESTAMP <= seconds < MAX_TIMESTAMP
