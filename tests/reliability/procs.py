"""Process helpers of the fault suite: logs to wait on, and the run's end to check."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

from tests.helpers import sigkill


def wait_for_text(path: Path, text: str, timeout_s: float,
                  proc: subprocess.Popen[str] | None = None) -> bool:
    """Wait until ``text`` appears in the file at ``path`` (False on timeout, or when ``proc``
    exits first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def tracebacks(*paths: Path) -> list[str]:
    """The logs among ``paths`` that hold a Python traceback."""
    return [str(p) for p in paths if p.exists() and "Traceback" in p.read_text(errors="replace")]


def finish(proc: subprocess.Popen[str], timeout_s: float = 300) -> str:
    """Wait for ``proc``; it must exit 0. Its standard output."""
    out, _ = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, f"{proc.args!r} exited with {proc.returncode}"
    return out or ""


def sigkill_after(proc: subprocess.Popen[str], seconds: float) -> None:
    """SIGKILL ``proc`` ``seconds`` from now; it must still be running then."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=seconds)
    sigkill(proc)
