"""Effectively-once scoring: kill -9 and restart, and a group of two losing one member.

Every run scores the same input topics with its own consumer group, checkpoint directory and
alerts topic, and the alert ids (and bytes) are compared with an uninterrupted run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from pipeline import clients
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import unique
from tests.helpers import (
    AlertDiff,
    checkpoint_files,
    produce_chain,
    read_alerts,
    scorer_run,
    sigkill,
    start_scorer,
)

pytestmark = pytest.mark.integration

BLOCKS = 1500


@pytest.fixture(scope="module")
def _module_input(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[Settings, dict[str, set[bytes]]]:
    """Input topics filled once for the module, and the alerts of an uninterrupted run over
    them. The tests only read them (each run has its own group, checkpoints and alerts
    topic), so one baseline serves them all (it took ~20 s per test)."""
    tmp = tmp_path_factory.mktemp("scored-input")
    names = {f"topics__{role}": unique(f"t-{role}") for role in Settings().topics.all()}
    shared = Settings.load(env={}).replace(
        bootstrap_servers=kafka_bootstrap, consumer_group=unique("g"),
        checkpoint_uri=str(tmp / "checkpoints"), **names)
    ensure_topics(shared)
    produce_chain(shared, seed=77, blocks=range(BLOCKS))
    baseline = scorer_run(shared, tmp, "baseline")
    proc = start_scorer(baseline, "--until-caught-up")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    assert json.loads(out)["alerts_by_type"]
    reader = clients.consumer(baseline, baseline.topics.alerts, group_id=unique("group"),
                              session_timeout_ms=2000, heartbeat_interval_ms=500)
    try:
        alerts = read_alerts(reader)
    finally:
        reader.close()
    assert len(alerts) >= 5
    return shared, alerts


@pytest.fixture
def settings(_module_input: tuple[Settings, dict[str, set[bytes]]]) -> Settings:
    """The module's input topics (replacing tests/conftest.py's per-test ``settings``, so
    ``consumer_factory`` and the runs below read and score them)."""
    return _module_input[0]


@pytest.fixture
def scored_input(_module_input: tuple[Settings, dict[str, set[bytes]]]
                 ) -> dict[str, set[bytes]]:
    """The alerts of the uninterrupted run over the module's input topics."""
    return _module_input[1]


@pytest.mark.parametrize("kill_after_checkpoints", [1, 4])
def test_sigkill_and_restart_emit_the_same_alerts(
        settings: Settings, tmp_path: Path, scored_input: dict[str, set[bytes]],
        consumer_factory: Callable[..., KafkaConsumer], kill_after_checkpoints: int) -> None:
    run = scorer_run(settings, tmp_path, "killed")
    proc = start_scorer(run)
    deadline = time.monotonic() + 120
    while len(checkpoint_files(run)) < kill_after_checkpoints and time.monotonic() < deadline:
        time.sleep(0.02)
    sigkill(proc)

    restarted = start_scorer(run, "--until-caught-up")
    restarted.communicate(timeout=300)
    assert restarted.returncode == 0
    alerts = read_alerts(consumer_factory(run.topics.alerts))
    diff = AlertDiff.of(alerts, scored_input)  # re-sent alerts must be byte-identical
    assert diff.clean, diff  # nothing lost, nothing extra


def test_two_scorers_split_partitions_and_one_takes_over(
        settings: Settings, tmp_path: Path, scored_input: dict[str, set[bytes]],
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    assert settings.partitions.transactions == 4
    run = scorer_run(settings, tmp_path, "pair")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with logs[0].open("w") as log_a, logs[1].open("w") as log_b:
        _split_and_take_over(run, logs, start_scorer(run, log=log_a), start_scorer(run, log=log_b))

    finisher = start_scorer(run, "--until-caught-up")  # whatever was left, from the checkpoints
    finisher.communicate(timeout=300)
    assert finisher.returncode == 0
    diff = AlertDiff.of(read_alerts(consumer_factory(run.topics.alerts)), scored_input)
    assert diff.clean, diff


def _split_and_take_over(run: Settings, logs: list[Path], first: subprocess.Popen[str],
                         second: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all("opened" in p.read_text() for p in logs):
        time.sleep(0.1)
    time.sleep(1.0)
    owned = [{line.split("task ")[1].split()[0] for line in p.read_text().splitlines()
              if "task p" in line and "opened" in line} for p in logs]
    assert owned[0] and owned[1], owned  # both members hold partitions
    group_dir = Path(run.checkpoint_uri) / run.consumer_group
    while time.monotonic() < deadline and not any(
            any((group_dir / task).glob("*.ckpt")) for task in owned[0]):
        time.sleep(0.05)  # the leaver has checkpointed at least one of its tasks

    mark = len(logs[1].read_text())
    first.send_signal(signal.SIGTERM)  # a clean leave: checkpoint, then release
    first.communicate(timeout=60)
    assert first.returncode == 0

    def opened_later(marker: str = "opened") -> set[str]:
        lines = logs[1].read_text()[mark:].splitlines()  # the survivor's log since the leave
        return {line.split("task ")[1].split()[0] for line in lines if marker in line}

    def taken_over() -> set[str]:
        return opened_later("opened from checkpoint") & owned[0]

    deadline = time.monotonic() + 60  # the survivor rebalances at its next heartbeat
    while not owned[0] <= opened_later() and time.monotonic() < deadline:
        time.sleep(0.2)
    second.send_signal(signal.SIGTERM)
    second.communicate(timeout=60)
    assert second.returncode == 0
    assert owned[0] <= opened_later(), "the survivor took over the leaver's tasks"
    assert taken_over(), "…restoring those the leaver had checkpointed"
    assert "Traceback" not in logs[0].read_text() + logs[1].read_text()
