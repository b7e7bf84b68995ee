"""Process helpers of the fault suite: logs to wait on, and the run's end to check."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

from kafka.errors import KafkaError

from pipeline import clients
from pipeline.settings import Settings
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


def wait_caught_up(run: Settings, records: int, scorers: list[subprocess.Popen[str]],
                   timeout_s: float = 120) -> float:
    """Seconds until the group of ``run`` has committed ``records`` offsets of its input
    topics (transactions and DEX) in all. Scorers commit with each checkpoint, so this is
    their own progress; each of ``scorers`` must keep running meanwhile."""
    started = time.monotonic()
    admin = clients.admin(run)
    inputs = (run.topics.transactions, run.topics.dex)
    try:
        while time.monotonic() - started < timeout_s:
            assert all(p.poll() is None for p in scorers), "a scorer exited"
            try:
                offsets = admin.list_group_offsets(run.consumer_group)[run.consumer_group]
            except KafkaError:
                offsets = {}
            if sum(m.offset for tp, m in offsets.items() if tp.topic in inputs) >= records:
                return time.monotonic() - started
            time.sleep(0.25)
    finally:
        admin.close()
    raise AssertionError(f"the scorers did not read their input to the end within "
                         f"{timeout_s:.0f} s")
