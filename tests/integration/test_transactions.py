"""Exactly-once output with Kafka transactions (consumers/transactions.py), on both engines.

The sharpest case for the idempotent path: a scorer that has sent every alert but kept no
checkpoint is SIGKILLed. Its successor starts from fresh state and reads the input again.
Without transactions it sends every alert again (byte-identical copies, which the sinks
de-duplicate). With them it re-reads up to the committed offsets without output, so a
``read_committed`` reader sees each alert once. On Tansu, which does not isolate
transactions, ``auto`` is the idempotent path.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from consumers.transactions import supports_transactions, use_transactions
from pipeline import clients
from pipeline.alerts import Alert
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import unique
from tests.helpers import drain, produce_chain, scorer_run, sigkill, start_scorer
from tests.reliability.procs import finish

pytestmark = pytest.mark.integration

NO_CHECKPOINTS = ("--checkpoint-every", "100000000", "--checkpoint-interval", "3600")


def test_auto_uses_transactions_where_the_broker_isolates_them(
        settings: Settings, broker_engine: str) -> None:
    isolates = broker_engine == "kafka"
    assert supports_transactions(settings) is isolates
    assert use_transactions(settings) is isolates
    assert use_transactions(settings.replace(transactions="off")) is False
    if isolates:
        assert use_transactions(settings.replace(transactions="on")) is True
    else:
        with pytest.raises(ConfigError, match="does not isolate transactions"):
            use_transactions(settings.replace(transactions="on"))


def _wait_for_alerts(settings: Settings, count: int, timeout_s: float = 90) -> None:
    """Until a read_committed reader of every alerts partition has seen ``count`` alerts."""
    topic = settings.topics.alerts
    consumer = clients.consumer(settings, group_id=unique("read"))
    try:
        consumer.assign([TopicPartition(topic, p)
                         for p in sorted(clients.partitions_for(consumer, topic))])
        seen = 0
        deadline = time.monotonic() + timeout_s
        while seen < count and time.monotonic() < deadline:
            seen += sum(len(batch) for batch in consumer.poll(timeout_ms=500).values())
    finally:
        consumer.close()
    assert seen >= count, f"{seen} of {count} alerts within {timeout_s:.0f} s"


@pytest.mark.parametrize("transactions", ["auto", "off"])
def test_a_successor_sends_nothing_its_killed_predecessor_committed(
        settings: Settings, tmp_path: Path, transactions: str, broker_engine: str,
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    settings = settings.replace(transactions=transactions)
    ensure_topics(settings)
    produce_chain(settings, seed=5, blocks=range(200), campaign_rate=40.0)
    reference = scorer_run(settings, tmp_path, "reference")
    finish(start_scorer(reference, "--until-caught-up"), timeout_s=300)
    expected = Counter(Alert.from_json(m.value).alert_id
                       for m in drain(consumer_factory(reference.topics.alerts)))

    run = scorer_run(settings, tmp_path, "killed")
    with (tmp_path / "victim.log").open("w") as log:
        victim = start_scorer(run, *NO_CHECKPOINTS, log=log)
        try:
            _wait_for_alerts(run, sum(expected.values()))
            time.sleep(0.5)  # its last offsets committed (transactions) or not (off)
        finally:
            sigkill(victim)
    # none of its work survives in the store: a rebalance as it joined may have checkpointed
    # the first records, so the store is emptied (its successor starts fresh either way)
    shutil.rmtree(run.checkpoint_uri, ignore_errors=True)
    finish(start_scorer(run, "--until-caught-up"), timeout_s=300)
    got = Counter(Alert.from_json(m.value).alert_id
                  for m in drain(consumer_factory(run.topics.alerts)))  # read_committed

    assert len(expected) >= 10 and max(expected.values()) == 1
    assert set(got) == set(expected)
    if transactions == "auto" and broker_engine == "kafka":
        assert max(got.values()) == 1, "an alert reached a read_committed reader twice"
    else:  # the idempotent path: the fresh successor sent every alert again
        assert all(n == 2 for n in got.values()), got
