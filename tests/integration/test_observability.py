"""Metrics, health and lag of the real services against the real broker.

- lag comes from the fetch high-water mark, and matches what is left to read;
- the auditor is ready once its partitions are read, and removes its lag series on stop;
- ``chainwatch score --metrics-port`` serves /metrics with non-zero throughput, /healthz and
  /readyz, and logs one JSON object a line with ``--log-format json``.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import REGISTRY

from consumers.auditor import AuditorService
from pipeline.lag import LagMonitor
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from producers.sink import KafkaSink
from producers.synth import SynthConfig, SyntheticChain
from tests.conftest import CHAINWATCH, cli_env, free_port, http_get

pytestmark = pytest.mark.integration


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric in the Prometheus text format."""
    found = re.findall(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, flags=re.MULTILINE)
    return {labels: float(value) for labels, value in found}


def test_lag_is_read_from_the_high_water_mark(
        settings: Settings, topic_factory: Callable[..., str],
        producer_factory: Callable[..., KafkaProducer],
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    topic = topic_factory(partitions=1)
    producer = producer_factory()
    for batch in range(5):  # several batches: ListOffsets would answer the last batch's base
        for i in range(10):
            producer.send(topic, value=b"%d-%d" % (batch, i))
        producer.flush()
    consumer = consumer_factory(max_poll_records=15)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = 0
    deadline = time.monotonic() + 20
    while got == 0 and time.monotonic() < deadline:
        got = sum(len(m) for m in consumer.poll(timeout_ms=200).values())
    monitor = LagMonitor()
    try:
        snap = monitor.update(consumer, force=True)
        assert snap.lags == {(topic, 0): 50 - got}
        assert REGISTRY.get_sample_value("chainwatch_consumer_lag",
                                         {"topic": topic, "partition": "0"}) == 50 - got
    finally:
        monitor.close()
    assert REGISTRY.get_sample_value("chainwatch_consumer_lag",
                                     {"topic": topic, "partition": "0"}) is None


def test_auditor_is_ready_once_its_partitions_are_read(
        settings: Settings, tmp_path: Path,
        producer_factory: Callable[..., KafkaProducer]) -> None:
    run = settings.replace(audit__store=str(tmp_path / "audit.db"))
    ensure_topics(run)
    producer = producer_factory()
    for i in range(20):
        producer.send(run.topics.alerts, value=b"{not an alert %d" % i)  # dead-lettered
    producer.flush()
    stop = threading.Event()
    service = AuditorService(run, stop)
    assert service.ready() == (False, "starting")
    thread = threading.Thread(target=service.run, name="auditor")
    thread.start()
    try:
        wait_for(lambda: service.ready()[0], 30, "the auditor to be ready")
        assert service.alive() == (True, "ok")
        assert service.ready()[1].startswith(
            f"{run.partitions.alerts + run.partitions.checkpoints} partitions assigned")
        lag = {p: REGISTRY.get_sample_value("chainwatch_consumer_lag",
                                            {"topic": run.topics.alerts, "partition": str(p)})
               for p in range(run.partitions.alerts)}
        assert set(lag.values()) == {0.0}
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert service.ready() == (False, "stopped")
    assert REGISTRY.get_sample_value("chainwatch_consumer_lag",
                                     {"topic": run.topics.alerts, "partition": "0"}) is None


def test_score_serves_metrics_health_and_readiness(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    produced = 0
    with KafkaSink(settings) as sink:
        for block in SyntheticChain(SynthConfig(seed=12, blocks=80)).blocks():
            for record in [*block.transactions, *block.dex_events]:
                sink.write(record)
                produced += 1
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stderr = tmp_path / "score.log"
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [CHAINWATCH, "score", "--metrics-port", str(port), "--checkpoint-every", "50",
             "--log-format", "json", "--log-level", "INFO", "--session-timeout", "2"],
            env=cli_env(settings) | {"CHAINWATCH_METRICS_HOST": "127.0.0.1"},
            stdout=subprocess.DEVNULL, stderr=err, text=True)
    try:
        wait_for(lambda: http_get(base + "/healthz")[0] == 200, 30, "/healthz")
        wait_for(lambda: http_get(base + "/readyz")[0] == 200, 60, "/readyz")
        inputs = len({settings.topics.transactions, settings.topics.dex, settings.topics.trades,
                      settings.topics.labels}) * settings.partitions.transactions
        assert http_get(base + "/readyz")[1].startswith(f"ready: {inputs} partitions assigned")

        def consumed() -> float:
            return sum(samples(http_get(base + "/metrics")[1],
                               "chainwatch_records_consumed_total").values())

        def checkpointed_tasks() -> dict[str, float]:
            return samples(http_get(base + "/metrics")[1],
                           "chainwatch_checkpoint_last_success_timestamp_seconds")

        wait_for(lambda: consumed() == produced, 30, "every record to be consumed")
        wait_for(lambda: len(checkpointed_tasks()) == 4, 30, "a checkpoint of each task")
        metrics = http_get(base + "/metrics")[1]
        lags = samples(metrics, "chainwatch_consumer_lag")
        assert len(lags) == inputs
        assert set(lags.values()) == {0.0}
        assert samples(metrics, "chainwatch_scoring_latency_seconds_count")[""] > 0
        tasks = samples(metrics, "chainwatch_checkpoint_last_success_timestamp_seconds")
        assert all(abs(ts - time.time()) < 120 for ts in tasks.values())
        assert samples(metrics, "chainwatch_checkpoint_size_bytes_count")[""] >= 4
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert http_get(base + "/healthz", timeout_s=1)[0] == 0  # the server went with it
    lines = stderr.read_text().splitlines()
    docs = [json.loads(line) for line in lines]  # every stderr line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(docs[0])
    assert any(d["message"].startswith("chainwatch score: consumed") for d in docs)
