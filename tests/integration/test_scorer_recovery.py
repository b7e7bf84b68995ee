"""Effectively-once scoring: kill -9 and restart, and a group of two losing one member.

Every run scores the same input topics with its own consumer group, checkpoint directory and
alerts topic, and the alert ids (and bytes) are compared with an uninterrupted run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from kafka import KafkaConsumer

from pipeline.alerts import Alert
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from producers.campaigns import CAMPAIGN_TYPES
from producers.sink import KafkaSink
from producers.synth import SynthConfig, SyntheticChain
from tests.conftest import CHAINWATCH, cli_env, unique

pytestmark = pytest.mark.integration

BLOCKS = 1500


def _produce(settings: Settings, seed: int, blocks: range) -> int:
    chain = SyntheticChain(SynthConfig(seed=seed, blocks=blocks.stop,
                                       campaigns=dict.fromkeys(CAMPAIGN_TYPES, 4.0)))
    count = 0
    with KafkaSink(settings) as sink:
        for i, block in enumerate(chain.blocks()):
            if i in blocks:
                for record in [*block.transactions, *block.dex_events]:
                    sink.write(record)
                    count += 1
    return count


def _run(settings: Settings, tmp: Path, name: str) -> Settings:
    """Settings for one scorer run: own group, checkpoints and alerts topic."""
    run = settings.replace(consumer_group=unique(f"g-{name}"),
                           checkpoint_uri=str(tmp / f"ckpt-{name}"),
                           topics__alerts=unique(f"alerts-{name}"))
    ensure_topics(run)
    return run


def _score(settings: Settings, *extra: str, log: IO[str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CHAINWATCH, "score", "--checkpoint-every", "2000", "--checkpoint-interval", "0.5",
         "--json", "--log-level", "INFO", *extra], env=cli_env(settings),
        stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL, text=True)


def _alerts(consumer: KafkaConsumer) -> dict[str, set[bytes]]:
    """alert id → the distinct encodings seen (one, if re-sent alerts are byte-identical)."""
    seen: dict[str, set[bytes]] = {}
    quiet = 0
    while quiet < 6:
        batch = consumer.poll(timeout_ms=500)
        quiet = 0 if batch else quiet + 1
        for messages in batch.values():
            for m in messages:
                seen.setdefault(Alert.from_json(m.value).alert_id, set()).add(m.value)
    return seen


def _checkpoints(run: Settings) -> list[Path]:
    return sorted(Path(run.checkpoint_uri).rglob("*.ckpt"))


@pytest.fixture
def scored_input(settings: Settings, tmp_path: Path,
                 consumer_factory: Callable[..., KafkaConsumer]) -> Iterator[dict[str, set[bytes]]]:
    """The input topics filled, and the alerts of an uninterrupted run over them."""
    ensure_topics(settings)
    _produce(settings, seed=77, blocks=range(BLOCKS))
    baseline = _run(settings, tmp_path, "baseline")
    proc = _score(baseline, "--until-caught-up")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    assert json.loads(out)["alerts_by_type"]
    alerts = _alerts(consumer_factory(baseline.topics.alerts))
    assert len(alerts) >= 5
    yield alerts


@pytest.mark.parametrize("kill_after_checkpoints", [1, 4])
def test_sigkill_and_restart_emit_the_same_alerts(
        settings: Settings, tmp_path: Path, scored_input: dict[str, set[bytes]],
        consumer_factory: Callable[..., KafkaConsumer], kill_after_checkpoints: int) -> None:
    run = _run(settings, tmp_path, "killed")
    proc = _score(run)
    deadline = time.monotonic() + 120
    while len(_checkpoints(run)) < kill_after_checkpoints and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    restarted = _score(run, "--until-caught-up")
    restarted.communicate(timeout=300)
    assert restarted.returncode == 0
    alerts = _alerts(consumer_factory(run.topics.alerts))
    assert set(alerts) == set(scored_input)  # nothing lost, nothing extra
    for alert_id, encodings in alerts.items():  # re-sent alerts are byte-identical
        assert encodings == scored_input[alert_id]


def test_two_scorers_split_partitions_and_one_takes_over(
        settings: Settings, tmp_path: Path, scored_input: dict[str, set[bytes]],
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    assert settings.partitions.transactions == 4
    run = _run(settings, tmp_path, "pair")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with logs[0].open("w") as log_a, logs[1].open("w") as log_b:
        _split_and_take_over(run, logs, _score(run, log=log_a), _score(run, log=log_b))

    finisher = _score(run, "--until-caught-up")  # whatever was left, from the checkpoints
    finisher.communicate(timeout=300)
    assert finisher.returncode == 0
    alerts = _alerts(consumer_factory(run.topics.alerts))
    assert set(alerts) == set(scored_input)
    for alert_id, encodings in alerts.items():
        assert encodings == scored_input[alert_id]


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
