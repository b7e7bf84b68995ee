"""The alert sink against a real broker: every alert stored once, resumed from the store.

Alerts go to the alerts topic (some re-sent, as a restarted scorer re-sends them, and one
message that is no alert); the sink stores each id once, with its exact bytes, dead-letters
the bad message, and leaves the store's offsets at the end of every partition. The SIGKILL
test kills ``chainwatch alerts sink`` mid-stream a few times and restarts it: nothing is lost
or stored twice.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import REGISTRY

from consumers.alert_sink import AlertSinkService
from pipeline.alert_store import AlertStore
from pipeline.alerts import Alert
from pipeline.dlq import decode_letter
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.alert_backends import alert_store_url
from tests.conftest import CHAINWATCH, cli_env, consume_all
from tests.helpers import make_alert, sigkill

__all__ = ["alert_store_url"]  # the fixture, imported

pytestmark = pytest.mark.integration
METRICS = ("chainwatch_alert_store_alerts_total", "chainwatch_alert_store_duplicates_total",
           "chainwatch_alert_store_batch_seconds_count")


def _send(producer: KafkaProducer, topic: str, alerts: list[Alert],
          ends: dict[tuple[str, int], int]) -> None:
    """Send ``alerts`` keyed by subject; note each partition's end offset in ``ends``."""
    futures = [producer.send(topic, value=a.to_json(), key=a.subject.encode()) for a in alerts]
    producer.flush()
    for f in futures:
        meta = f.get(timeout=10)
        ends[(topic, meta.partition)] = max(ends.get((topic, meta.partition), 0),
                                            meta.offset + 1)


def _check_store(path: Path | str, alerts: dict[str, Alert],
                 ends: dict[tuple[str, int], int]) -> None:
    with AlertStore.open(str(path), create=False) as store:
        stored = store.query(newest_first=False)
        assert [s.seq for s in stored] == list(range(1, len(stored) + 1))
        assert sorted(s.alert_id for s in stored) == sorted(alerts)  # each once, none lost
        assert all(s.raw == alerts[s.alert_id].to_json() for s in stored)  # byte-exact
        assert store.offsets() == ends


def test_alerts_resent_and_malformed_are_stored_once(
        settings: Settings, alert_store_url: str,
        producer_factory: Callable[..., KafkaProducer],
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    """On each backend: SQLite, and PostgreSQL."""
    path = alert_store_url
    run = settings.replace(alerts__store=path)
    ensure_topics(run)
    topic = run.topics.alerts
    producer = producer_factory()
    ends: dict[tuple[str, int], int] = {}
    first = [make_alert(i) for i in range(200)]
    _send(producer, topic, first, ends)
    _send(producer, topic, [make_alert(i) for i in range(150, 250)], ends)  # 50 re-sent
    bad = producer.send(topic, value=b'{"not": "an alert"}', key=b"x").get(timeout=10)
    ends[(topic, bad.partition)] = max(ends.get((topic, bad.partition), 0), bad.offset + 1)

    before = {name: REGISTRY.get_sample_value(name) or 0.0 for name in METRICS}
    stats = AlertSinkService(run).run(input_finished=lambda: True)
    assert (stats.stored, stats.duplicates, stats.dead_lettered) == (250, 50, 1)
    after = {name: REGISTRY.get_sample_value(name) or 0.0 for name in METRICS}
    assert [after[n] - before[n] for n in METRICS] == [250, 50, stats.batches]
    alerts = {a.alert_id: a for a in (make_alert(i) for i in range(250))}
    _check_store(path, alerts, ends)
    letters = consume_all(consumer_factory(run.topics.dlq), 1)
    letter = decode_letter(letters[0].value)
    assert (letter["stage"], letter["reason"]) == ("alert_sink", "missing_field")
    assert letter["source"] == {"topic": topic, "partition": bad.partition,
                                "offset": bad.offset}

    # a second run resumes from the store: only what is new is read and stored
    _send(producer, topic, [make_alert(i) for i in range(240, 300)], ends)
    again = AlertSinkService(run).run(input_finished=lambda: True)
    assert (again.consumed, again.stored, again.duplicates) == (60, 50, 10)
    alerts |= {a.alert_id: a for a in (make_alert(i) for i in range(250, 300))}
    _check_store(path, alerts, ends)


def _count(path: Path) -> int:
    try:
        with AlertStore.open(str(path), create=False) as store:
            return store.count()
    except Exception:  # not made yet, or being made by the sink
        return 0


def test_sigkills_of_the_sink_lose_and_duplicate_nothing(
        settings: Settings, tmp_path: Path,
        producer_factory: Callable[..., KafkaProducer]) -> None:
    path = tmp_path / "alerts.db"
    run = settings.replace(alerts__store=str(path))
    ensure_topics(run)
    env = cli_env(run) | {"CHAINWATCH_ALERTS_STORE": str(path)}
    topic = run.topics.alerts
    producer = producer_factory()
    ends: dict[tuple[str, int], int] = {}
    sent: dict[str, Alert] = {}
    done = threading.Event()

    def flow() -> None:  # batches of 200 alerts, the last 20 of each sent again with the next
        start = 0
        for _ in range(80):
            batch = [make_alert(i) for i in range(max(start - 20, 0), start + 200)]
            _send(producer, topic, batch, ends)
            sent.update((a.alert_id, a) for a in batch)
            start += 200
            time.sleep(0.1)
        done.set()

    sender = threading.Thread(target=flow, daemon=True)
    sender.start()
    kills, seen, mid_stream = 0, 0, 0
    while kills < 3:
        with (tmp_path / f"sink-{kills}.log").open("w") as log:
            proc = subprocess.Popen([CHAINWATCH, "alerts", "sink", "--log-level", "INFO"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
            deadline = time.monotonic() + 60
            while _count(path) <= seen and time.monotonic() < deadline:
                assert proc.poll() is None, (tmp_path / f"sink-{kills}.log").read_text()
                time.sleep(0.02)
            time.sleep(0.05 * kills)  # a little later each time: mid-batch, between batches
            mid_stream += not done.is_set()
            sigkill(proc)
        seen = _count(path)
        kills += 1
    sender.join(timeout=120)
    assert done.is_set(), "the alerts did not all go out"
    assert mid_stream == kills, "a kill came after the last alert was sent"

    final = subprocess.run([CHAINWATCH, "alerts", "sink", "--until-caught-up", "--json"],
                           env=env, capture_output=True, text=True, timeout=300, check=False)
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["dead_lettered"] == 0 and "Traceback" not in final.stderr
    _check_store(path, sent, ends)
    logs = [p.read_text() for p in tmp_path.glob("sink-*.log")]
    assert not any("Traceback" in text for text in logs)


def test_the_sink_serves_metrics_and_health(settings: Settings, tmp_path: Path,
                                            producer_factory: Callable[..., KafkaProducer]) -> None:
    from tests.conftest import free_port, http_get

    path = tmp_path / "alerts.db"
    run = settings.replace(alerts__store=str(path))
    ensure_topics(run)
    _send(producer_factory(), run.topics.alerts, [make_alert(i) for i in range(30)], {})
    port = free_port()
    proc = subprocess.Popen([CHAINWATCH, "alerts", "sink", "--store", str(path),
                             "--metrics-port", str(port)], env=cli_env(run),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while http_get(base + "/readyz")[0] != 200 and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.1)
        assert http_get(base + "/healthz")[0] == 200
        status, body = http_get(base + "/readyz")
        assert status == 200, body
        metrics = http_get(base + "/metrics")[1]
        assert "chainwatch_alert_store_alerts_total 30.0" in metrics
        assert "chainwatch_alert_store_batch_seconds_count" in metrics
    finally:
        proc.terminate()  # SIGTERM: a clean stop
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert _count(path) == 30
