"""The notifier against a real broker and a real local HTTP receiver that fails on purpose.

Alerts go to the alerts topic; :class:`~consumers.notifier.NotifierService` POSTs them to a
:class:`~tests.webhook_server.WebhookServer` scripted to answer 500, 400, 429, slowly or 200,
and the tests look at what arrived, what was dead-lettered, the metrics, the logs and the
group's position.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import REGISTRY

from consumers.notifier import NotifierService
from pipeline.alerts import SEVERITIES, Alert
from pipeline.dlq import decode_letter
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from pipeline.webhooks import WebhookTarget
from tests.conftest import consume_all, unique
from tests.helpers import make_alert, send_alerts
from tests.webhook_server import Reply, WebhookServer

pytestmark = pytest.mark.integration
SECRET = "s3cr3t-token"
# a 2 s session: a fresh group's first join takes half the session on the local broker (5 s
# with the default 10 s), and a restarted member waits out its stopped self's session
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _deliveries() -> dict[str, float]:
    return {o: _metric("chainwatch_notify_deliveries_total", outcome=o)
            for o in ("delivered", "retried", "dead_lettered", "filtered")}


def _run(settings: Settings, server: WebhookServer, group: str | None = None,
         **target: Any) -> NotifierService:
    """One notifier run to the end of the alerts topic."""
    options = {"retries": 3, "backoff_ms": 10, "timeout_ms": 2000} | target
    service = NotifierService(settings, WebhookTarget.build(server.url(), **options),
                              group_id=group or unique("notify"), **FAST_GROUP)
    service.run(input_finished=lambda: True)
    return service


@pytest.fixture
def run_settings(settings: Settings) -> Settings:
    ensure_topics(settings)
    return settings


def test_first_attempts_fail_then_it_is_delivered_once_with_its_retries_counted(
        run_settings: Settings, producer_factory: Callable[..., KafkaProducer]) -> None:
    [alert] = send_alerts(run_settings, range(1), producer_factory)
    before = _deliveries()
    attempts_5xx = _metric("chainwatch_notify_attempts_total", result="http_5xx")
    latency = _metric("chainwatch_notify_delivery_seconds_count")
    with WebhookServer([Reply(500), Reply(503), Reply(200)]) as server:
        stats = _run(run_settings, server).stats
    assert (stats.delivered, stats.retries, stats.attempts, stats.dead_lettered) == (1, 2, 3, 0)
    assert len(server.requests) == 3
    assert {r.body for r in server.requests} == {alert.to_json()}  # the wire JSON, exactly
    assert {r.headers["Idempotency-Key"] for r in server.requests} == {alert.alert_id}
    assert server.requests[0].headers["Content-Type"] == "application/json"
    after = _deliveries()
    assert {k: after[k] - before[k] for k in after} == {
        "delivered": 1, "retried": 2, "dead_lettered": 0, "filtered": 0}
    assert _metric("chainwatch_notify_attempts_total", result="http_5xx") - attempts_5xx == 2
    assert _metric("chainwatch_notify_delivery_seconds_count") - latency == 1


def test_always_500_dead_letters_after_the_last_retry_and_goes_on(
        run_settings: Settings, producer_factory: Callable[..., KafkaProducer],
        consumer_factory: Callable[..., KafkaConsumer],
        caplog: pytest.LogCaptureFixture) -> None:
    alerts = send_alerts(run_settings, range(2), producer_factory)
    with caplog.at_level(logging.DEBUG), WebhookServer([Reply(500)]) as server:
        stats = _run(run_settings, server, retries=2).stats
    assert len(server.requests) == 2 * 3  # retries + 1 attempts each, then the next alert
    assert (stats.delivered, stats.dead_lettered) == (0, 2)
    letters = [decode_letter(m.value) for m in consume_all(
        consumer_factory(run_settings.topics.dlq), 2)]
    by_id = {letter["source"]["alert_id"]: letter for letter in letters}
    assert sorted(by_id) == sorted(a.alert_id for a in alerts)
    for a in alerts:
        letter = by_id[a.alert_id]
        assert (letter["stage"], letter["reason"]) == ("notify", "webhook_failed")
        assert letter["original"] == a.to_json()
        assert "HTTP 500" in letter["detail"] and a.alert_id in letter["detail"]
        assert "3 attempts" in letter["detail"]
        assert letter["source"]["topic"] == run_settings.topics.alerts
    # the URL is a secret: scheme and host only, in the letters and in every log line
    raw_letters = b"".join(orjson.dumps(x, default=repr) for x in letters)
    assert SECRET.encode() not in raw_letters and b"/hooks/" not in raw_letters
    assert f"http://127.0.0.1:{server.port}" in letters[0]["detail"]
    assert "dead-lettered" in caplog.text and "trying again" in caplog.text
    assert SECRET not in caplog.text and "/hooks/" not in caplog.text


def test_a_400_is_dead_lettered_at_once(
        run_settings: Settings, producer_factory: Callable[..., KafkaProducer],
        consumer_factory: Callable[..., KafkaConsumer]) -> None:
    [alert] = send_alerts(run_settings, range(1), producer_factory)
    with WebhookServer([Reply(400)]) as server:
        stats = _run(run_settings, server, retries=5).stats
    assert len(server.requests) == 1 and (stats.retries, stats.dead_lettered) == (0, 1)
    [message] = consume_all(consumer_factory(run_settings.topics.dlq), 1)
    letter = decode_letter(message.value)
    assert (letter["reason"], letter["original"]) == ("webhook_rejected", alert.to_json())
    assert "HTTP 400 (not retried)" in letter["detail"]


def test_429_retry_after_is_honoured(
        run_settings: Settings, producer_factory: Callable[..., KafkaProducer]) -> None:
    send_alerts(run_settings, range(1), producer_factory)
    with WebhookServer([Reply(429, {"Retry-After": "1"}), Reply(200)]) as server:
        stats = _run(run_settings, server, backoff_ms=10).stats
    assert (stats.delivered, stats.retries) == (1, 1)
    first, second = server.requests
    assert second.at - first.at >= 0.95  # Retry-After, not the 10 ms backoff


def test_a_slow_receiver_times_out_and_is_retried(
        run_settings: Settings, producer_factory: Callable[..., KafkaProducer]) -> None:
    send_alerts(run_settings, range(1), producer_factory)
    timeouts = _metric("chainwatch_notify_attempts_total", result="timeout")
    with WebhookServer([Reply(200, delay_s=1.5), Reply(200)]) as server:
        started = time.monotonic()
        stats = _run(run_settings, server, timeout_ms=300).stats
    assert (stats.delivered, stats.retries, stats.attempts) == (1, 1, 2)
    assert _metric("chainwatch_notify_attempts_total", result="timeout") - timeouts == 1
    assert time.monotonic() - started < 15


def _by_severity(i: int, severity: str) -> Alert:
    a = make_alert(i)
    return Alert.build(type=a.type, severity=severity, score=a.score, subject=a.subject,
                       detector=a.detector, model_version=a.model_version,
                       evidence={"drop": 0.95, "pool": "0xabc", "reserve_before": 12.5},
                       source=a.source, event_time=a.event_time, detected_at=a.detected_at)


def _send(settings: Settings, producer: KafkaProducer, alerts: list[Alert]) -> None:
    for a in alerts:
        producer.send(settings.topics.alerts, value=a.to_json(), key=a.subject.encode())
    producer.flush()


def test_severity_filter_and_slack_body(
        run_settings: Settings, producer_factory: Callable[..., KafkaProducer]) -> None:
    alerts = [_by_severity(i, s) for i, s in enumerate(SEVERITIES)]
    _send(run_settings, producer_factory(), alerts)
    before = _deliveries()
    with WebhookServer() as server:
        stats = _run(run_settings, server, format="slack", min_severity="high").stats
    assert (stats.delivered, stats.filtered) == (2, 3)
    assert _deliveries()["filtered"] - before["filtered"] == 3
    bodies = [orjson.loads(r.body) for r in server.requests]
    wanted = {a.alert_id: a for a in alerts if a.severity in ("high", "critical")}
    assert {r.headers["Idempotency-Key"] for r in server.requests} == set(wanted)
    for message, request in zip(bodies, server.requests, strict=True):
        a = wanted[request.headers["Idempotency-Key"]]
        assert set(message) == {"text", "blocks"}
        assert message["text"].startswith(f"[{a.severity.upper()}] rug_pull on {a.subject}")
        kinds = [b["type"] for b in message["blocks"]]
        assert kinds == ["header", "section", "section", "context"]
        fields = "\n".join(f["text"] for f in message["blocks"][1]["fields"])
        for shown in ("*Type*\nrug_pull", f"*Severity*\n{a.severity}", a.subject, "0.900"):
            assert shown in fields
        assert "`drop` 0.95" in message["blocks"][2]["text"]["text"]
        assert a.alert_id in message["blocks"][3]["elements"][0]["text"]


def test_restart_resumes_after_the_last_delivered_alert(
        run_settings: Settings, producer_factory: Callable[..., KafkaProducer]) -> None:
    """At least once: a stop during a retry's wait leaves that alert to the next run."""
    group = unique("notify")
    send_alerts(run_settings, range(3), producer_factory)
    with WebhookServer() as server:
        assert _run(run_settings, server, group).stats.delivered == 3
    send_alerts(run_settings, range(3, 5), producer_factory)
    stop = threading.Event()
    with WebhookServer([Reply(200), Reply(500)]) as server:  # the 2nd alert fails...
        target = WebhookTarget.build(server.url(), retries=5, backoff_ms=20_000)
        service = NotifierService(run_settings, target, stop, group_id=group, **FAST_GROUP)
        thread = threading.Thread(target=service.run)
        thread.start()
        deadline = time.monotonic() + 30
        while len(server.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()  # ...and the service is stopped while it waits to retry
        thread.join(10)
    assert not thread.is_alive()
    assert service.stats.delivered == 1 and len(server.requests) == 2
    interrupted = server.requests[1].headers["Idempotency-Key"]
    with WebhookServer() as server:  # the interrupted alert is sent again, nothing else
        again = _run(run_settings, server, group).stats
    assert again.delivered == 1
    assert server.requests[0].headers["Idempotency-Key"] == interrupted
    assert interrupted in {make_alert(3).alert_id, make_alert(4).alert_id}


def test_a_refused_connection_is_retried_and_its_letter_hides_the_url(
        run_settings: Settings, producer_factory: Callable[..., KafkaProducer],
        consumer_factory: Callable[..., KafkaConsumer],
        caplog: pytest.LogCaptureFixture) -> None:
    send_alerts(run_settings, range(1), producer_factory)
    server = WebhookServer()  # never started: nothing answers on its port
    port = server.port
    server._server.server_close()
    with caplog.at_level(logging.DEBUG):
        stats = _run(run_settings, server, retries=1).stats
    assert (stats.attempts, stats.dead_lettered) == (2, 1)
    [message] = consume_all(consumer_factory(run_settings.topics.dlq), 1)
    letter = decode_letter(message.value)
    assert "connection error: ConnectionRefusedError" in letter["detail"]
    assert f"http://127.0.0.1:{port}:" in letter["detail"]
    assert SECRET not in letter["detail"] and SECRET not in caplog.text
