"""Process helpers of the fault suite: logs to wait on, and the run's end to check."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

from pipeline import clients
from pipeline.checkpoints import CheckpointStore
from pipeline.errors import CheckpointError
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


def covered(run: Settings) -> int:
    """Offsets of the input topics (transactions and DEX) covered by the newest checkpoint of
    each task of ``run``, in all: what its scorers have durably read."""
    store = CheckpointStore.from_uri(run.checkpoint_uri)
    inputs, group = (run.topics.transactions, run.topics.dex), run.consumer_group
    try:
        newest = [store.newest(group, task) for task in store.tasks(group)]
    except CheckpointError:  # pruned while listed
        return 0
    return sum(ref.meta["offsets"].get(topic, 0) for ref in newest if ref is not None
               for topic in inputs)


def wait_covered(run: Settings, records: int, scorers: list[subprocess.Popen[str]],
                 timeout_s: float) -> float | None:
    """Seconds until the checkpoints of ``run`` cover ``records`` input offsets (None after
    ``timeout_s``); each of ``scorers`` must keep running meanwhile."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        assert all(p.poll() is None for p in scorers), "a scorer exited"
        if covered(run) >= records:
            return time.monotonic() - started
        time.sleep(0.25)
    return None


def committed(run: Settings) -> int:
    """The offsets the group of ``run`` has committed on its input topics, in all."""
    admin = clients.admin(run)
    try:
        offsets = admin.list_group_offsets(run.consumer_group)[run.consumer_group]
    finally:
        admin.close()
    inputs = (run.topics.transactions, run.topics.dex)
    return sum(m.offset for tp, m in offsets.items() if tp.topic in inputs)
