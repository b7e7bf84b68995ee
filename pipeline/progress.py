"""Live progress on stderr: a self-rewriting status line on a terminal, periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Prints ``render()`` at most every ``interval_s`` seconds, and once more at the end.

    On a terminal the line rewrites itself; in a log (not a TTY) a new line is printed every
    ``log_interval_s`` seconds so CI logs stay short.
    """

    def __init__(self, render: Callable[[], str], stream: TextIO | None = None,
                 interval_s: float = 0.2, log_interval_s: float = 5.0,
                 enabled: bool = True) -> None:
        self._render = render
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._interval = interval_s if self._tty else log_interval_s
        self._enabled = enabled
        self.started = time.monotonic()
        self._last = self.started  # the first line after one interval, with a real rate

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def tick(self) -> None:
        now = time.monotonic()
        if self._enabled and now - self._last >= self._interval:
            self._last = now
            self._write(self._render())

    def done(self) -> None:
        if self._enabled:
            self._write(self._render())
            if self._tty:
                self._stream.write("\n")
                self._stream.flush()

    def _write(self, line: str) -> None:
        if self._tty:
            self._stream.write("\r\x1b[2K" + line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()


def rate(count: float, seconds: float) -> str:
    """A human rate: ``12.3k/s``."""
    per_s = count / seconds if seconds > 0 else 0.0
    return f"{per_s / 1000:.1f}k/s" if per_s >= 1000 else f"{per_s:.0f}/s"


def eta(done: float, total: float, elapsed: float) -> str:
    """Time left as ``m:ss`` at the rate so far (``-:--`` before there is a rate)."""
    if done <= 0 or elapsed <= 0:
        return "-:--"
    left = int(max(total - done, 0) * elapsed / done)
    return f"{left // 60}:{left % 60:02d}"
