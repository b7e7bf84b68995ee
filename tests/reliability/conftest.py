"""Options and figures of the standing fault suite.

Seeds and counts are options, so a longer run is one flag away (``make soak``)::

    pytest tests/reliability --fault-seed 7 --fault-kills 20 --fault-records 10000 \\
        --fault-flips 1000

Each test records its figures (``kills=5 alerts=1234 lost=0 duplicated=0 changed=0``) with
the ``figures`` fixture; they are printed with each test's duration at the end of the run.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

FIGURES = pytest.StashKey[list[str]]()
ELAPSED = pytest.StashKey[list[float]]()
Reaper = Callable[[subprocess.Popen[str]], subprocess.Popen[str]]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reliability", "the standing fault suite (tests/reliability)")
    group.addoption("--fault-seed", type=int, default=1,
                    help="seed of kill times, malformed records and byte flips (default 1)")
    group.addoption("--fault-kills", type=int, default=2,
                    help="SIGKILLs per kill test (default 2)")
    group.addoption("--fault-records", type=int, default=40,
                    help="malformed records interleaved with valid ones (default 40)")
    group.addoption("--fault-flips", type=int, default=10,
                    help="byte flips of an audit store, and of checkpoints (default 10)")


@dataclass(frozen=True)
class Faults:
    """The suite's parameters; ``rng(name)`` is a generator seeded by the seed and ``name``."""

    seed: int
    kills: int
    records: int
    flips: int

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}/{name}")


@pytest.fixture
def faults(pytestconfig: pytest.Config) -> Faults:
    values = {name: pytestconfig.getoption(f"--fault-{name}")
              for name in ("seed", "kills", "records", "flips")}
    for name in ("kills", "records", "flips"):
        if values[name] < 1:
            raise pytest.UsageError(f"--fault-{name} must be at least 1")
    return Faults(**values)


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    """``reaper(proc)`` returns ``proc``, and SIGKILLs it at the end if it still runs, so a
    failed test leaves no process behind."""
    procs: list[subprocess.Popen[str]] = []

    def keep(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        procs.append(proc)
        return proc

    yield keep
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)  # reaps it and closes its pipes


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Callable[[str], None]]:
    """``figures("kills=5 lost=0 ...")``: printed now and in the run's summary."""
    lines = request.config.stash.setdefault(FIGURES, [])
    started = time.monotonic()
    recorded: list[str] = []

    def record(text: str) -> None:
        print(text)
        recorded.append(text)

    yield record
    elapsed = time.monotonic() - started
    request.config.stash.setdefault(ELAPSED, []).append(elapsed)
    lines.append(f"{request.node.name}: {' | '.join(recorded) or '(no figures)'} "
                 f"[{elapsed:.1f} s]")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)
        elapsed = config.stash.get(ELAPSED, [])
        terminalreporter.write_line(f"{len(elapsed)} fault tests took {sum(elapsed):.0f} s")
