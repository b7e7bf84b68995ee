"""SIGKILLs of the durable local broker under a running producer and scorer.

The broker (Tansu over the local S3 server, in a data directory) is killed at seeded moments
and restarted on the same port and directory while ``chainwatch produce synth`` and
``chainwatch score`` keep running. At the end every record of the seeded chain is in the
input topics once and unchanged, and the alerts equal those of an uninterrupted run over the
same topics.

Only Tansu is killed (its S3 server, seaweedfs ``weed mini``, is restarted with it). Either
way the broker sometimes loses a few records it had acknowledged (acks=all, idempotent), with
plain kafka-python as well as with chainwatch: a defect of that storage stack, noted in the
README. So the records the broker lost are a figure; what is asserted of chainwatch is that
nothing stored is duplicated or changed, the scorer reads to the end of the log, and its
alerts equal an uninterrupted run's over the same topics.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from pipeline import clients, codec
from pipeline.broker import LocalBroker, free_port
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import cli_env, unique
from tests.helpers import (
    AlertDiff,
    chain_records,
    drain,
    read_alerts,
    scorer_run,
    start_scorer,
    synth_command,
)
from tests.reliability.conftest import Faults, Reaper
from tests.reliability.procs import covered, finish, tracebacks, wait_for_text

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

BLOCKS = 200
CAMPAIGNS = 10.0


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[LocalBroker]:
    broker = LocalBroker(port=free_port(), data_dir=tmp_path / "broker")
    yield broker.start()
    broker.stop()


def _reader(settings: Settings, topic: str) -> KafkaConsumer:
    consumer = clients.consumer(settings, group_id=unique("reader"))
    partitions = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
    consumer.seek_to_beginning()
    return consumer


def _topic_values(settings: Settings, topic: str) -> tuple[list[bytes], int]:
    """The values stored in ``topic``, and its log end offsets (the high-water marks) summed."""
    consumer = _reader(settings, topic)
    try:
        values = [m.value for m in drain(consumer)]
        return values, sum(consumer.highwater(tp) or 0 for tp in consumer.assignment())
    finally:
        consumer.close()


def _kill(broker: LocalBroker) -> None:
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while broker.is_running() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not broker.is_running()


def test_chainwatch_loses_nothing_through_sigkills_of_the_durable_broker(
        settings: Settings, tmp_path: Path, durable: LocalBroker, faults: Faults, *,
        figures: Callable[[str], None], reaper: Reaper) -> None:
    on_durable = settings.replace(bootstrap_servers=durable.bootstrap)
    ensure_topics(on_durable)
    run = scorer_run(on_durable, tmp_path, "through-kills")
    rng = faults.rng("broker")
    records = chain_records(faults.seed, range(BLOCKS), CAMPAIGNS)
    rate = len(records) / (3.0 * faults.kills + 2)  # the stream outlasts the kills
    stream_log, scorer_log = tmp_path / "synth.log", tmp_path / "scorer.log"
    with stream_log.open("w") as slog, scorer_log.open("w") as log:
        stream = reaper(subprocess.Popen(synth_command(faults.seed, BLOCKS, rate, CAMPAIGNS),
                                         env=cli_env(on_durable), stdout=subprocess.PIPE,
                                         stderr=slog, text=True))
        scorer = reaper(start_scorer(run, log=log))
        assert wait_for_text(scorer_log, "opened", 60, scorer), scorer_log.read_text()
        for _ in range(faults.kills):
            time.sleep(rng.uniform(0.5, 2.5))
            _kill(durable)
            time.sleep(rng.uniform(0.0, 1.0))  # down for a while
            durable.start()  # same port, same data directory
        produced = json.loads(finish(stream, timeout_s=300))
        reference = scorer_run(on_durable, tmp_path, "reference")
        finish(reaper(start_scorer(reference, "--until-caught-up")))  # meanwhile, it goes on
        assert scorer.poll() is None, \
            "the scorer died with the broker:\n" + scorer_log.read_text()[-4000:]
        while_running = covered(run)
        scorer.send_signal(signal.SIGTERM)  # a clean stop checkpoints what it has read
        finish(scorer, timeout_s=60)
    read_by_the_scorer = covered(run)

    expected = {r.item_id: codec.encode(r) for r in records}
    stored: Counter[str] = Counter()
    changed = set()
    log_end = 0
    for topic in (on_durable.topics.transactions, on_durable.topics.dex):
        values, end = _topic_values(on_durable, topic)
        log_end += end
        for value in values:
            item_id = codec.decode(value).item_id
            stored[item_id] += 1
            if expected.get(item_id) != value:
                changed.add(item_id)
    expected_alerts = _alerts(reference)
    alerts = AlertDiff.of(_alerts(run), expected_alerts)
    lost = set(expected) - set(stored)
    duplicated = {i for i, n in stored.items() if n > 1}
    figures(f"kills={faults.kills} records={len(expected)} produced={produced['produced']} "
            f"stored: duplicated={len(duplicated)} changed={len(changed)} "
            f"lost_by_the_broker={len(lost)}; alerts={len(expected_alerts)} {alerts.figures()}")
    figures(f"the scorer that lived through the kills read {read_by_the_scorer} of "
            f"{log_end} offsets ({while_running} checkpointed before its clean stop)")
    assert produced["produced"] == len(expected) and len(expected_alerts) >= 3
    assert not duplicated and not changed
    # Tansu over seaweedfs sometimes loses a few records it acknowledged (12 and 13 of 6,619
    # seen here, with plain kafka-python too): a defect of the broker, shown in the figures,
    # not of chainwatch. Held to chainwatch: it reads to the end of what the broker kept, and
    # alerts exactly as an uninterrupted run over the same topics does.
    assert len(lost) <= len(expected) // 100, f"the broker lost {len(lost)} records"
    assert read_by_the_scorer == log_end
    assert alerts.clean, alerts
    assert not tracebacks(stream_log, scorer_log)


def _alerts(run: Settings) -> dict[str, set[bytes]]:
    consumer = _reader(run, run.topics.alerts)
    try:
        return read_alerts(consumer)
    finally:
        consumer.close()
