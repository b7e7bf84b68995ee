"""pipeline.webhooks without a network: targets, bodies, the retry policy on a fake transport."""

from __future__ import annotations

import email.utils
import random
import time

import orjson
import pytest

from pipeline.alerts import Alert
from pipeline.errors import ConfigError
from pipeline.secret import Secret
from pipeline.settings import Settings
from pipeline.webhooks import (
    EVIDENCE_SHOWN,
    MAX_BACKOFF_S,
    Attempt,
    Delivery,
    Webhook,
    WebhookTarget,
    _retry_after,
    body,
    slack_message,
)
from tests.helpers import make_alert

URL = "https://user:pw@hooks.example.com:8443/services/T0/B0/s3cr3t?token=abc"


class Script:
    """A fake transport answering with ``attempts`` in turn (the last repeats)."""

    def __init__(self, *attempts: Attempt) -> None:
        self.attempts = attempts
        self.calls: list[tuple[str, bytes, dict[str, str], float]] = []

    def __call__(self, url: str, data: bytes, headers: dict[str, str],
                 timeout_s: float) -> Attempt:
        self.calls.append((url, data, headers, timeout_s))
        return self.attempts[min(len(self.calls), len(self.attempts)) - 1]


def _deliver(script: Script, **options: int) -> tuple[Delivery, list[float]]:
    """Deliver b"{}" through ``script``; the waits asked for are recorded, not slept."""
    waits: list[float] = []
    target = WebhookTarget.build(URL, **({"retries": 3, "backoff_ms": 100} | options))
    delivery = Webhook(target, script, seed=1).deliver(
        b"{}", "abc", wait=lambda s: bool(waits.append(s)))
    return delivery, waits


def test_shown_is_scheme_and_host_only() -> None:
    target = WebhookTarget.build(URL)
    assert target.shown == "https://hooks.example.com:8443"
    assert "s3cr3t" not in repr(target) and "pw" not in repr(target)


@pytest.mark.parametrize(("url", "words"), [
    ("", "no webhook URL"),
    ("   ", "no webhook URL"),
    ("ftp://files.example.com/s3cr3t", "scheme 'ftp'"),
    ("hooks.example.com/services/s3cr3t", "no http(s) scheme"),
    ("xoxb-1234:s3cr3t", "no http(s) scheme"),
    ("https:///s3cr3t", "with a host"),
    ("https://hooks.example.com:port/s3cr3t", "port is not a number"),
    ("https://hooks.example.com/s3cr3t path", "spaces or control characters"),
])
def test_bad_urls_are_one_line_without_the_secret(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        WebhookTarget.build(url)
    message = str(info.value)
    assert words in message and "\n" not in message and "s3cr3t" not in message


@pytest.mark.parametrize(("options", "words"), [
    ({"format": "xml"}, "format 'xml' is not one of json, slack"),
    ({"min_severity": "urgent"}, "min_severity 'urgent' is not one of info, low"),
    ({"retries": -1}, "retries must be at least 0"),
    ({"timeout_ms": 0}, "timeout_ms must be at least 1"),
])
def test_bad_options(options: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        WebhookTarget.build(URL, **options)  # type: ignore[arg-type]


def test_from_settings_reads_the_notify_table() -> None:
    settings = Settings.load(env={"CHAINWATCH_NOTIFY_WEBHOOK_URL": URL,
                                  "CHAINWATCH_NOTIFY_FORMAT": "slack",
                                  "CHAINWATCH_NOTIFY_RETRIES": "2"})
    target = WebhookTarget.from_settings(settings.notify)
    assert (target.url, target.format, target.retries, target.min_severity) == (
        Secret(URL), "slack", 2, "medium")


def test_severity_order() -> None:
    target = WebhookTarget.build(URL, min_severity="medium")
    assert [target.wants(s) for s in ("info", "low", "medium", "high", "critical", "x")] == [
        False, False, True, True, True, False]


def test_backoff_doubles_with_a_little_jitter_and_is_capped() -> None:
    target = WebhookTarget.build(URL, backoff_ms=500)
    rng = random.Random(7)
    for retry, base in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)):
        assert base * 0.9 <= target.backoff_s(retry, rng) <= base * 1.1
    assert target.backoff_s(20, rng) == MAX_BACKOFF_S


def test_retry_after_seconds_and_dates() -> None:
    assert _retry_after("7") == 7.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 17 <= (_retry_after(later) or 0) <= 21


def test_5xx_retried_until_delivered_with_the_idempotency_key() -> None:
    script = Script(Attempt(500), Attempt(0, "connection error: x"), Attempt(204))
    delivery, waits = _deliver(script)
    assert delivery.outcome == "delivered" and len(delivery.attempts) == 3
    assert len(waits) == 2 and 0.09 <= waits[0] <= 0.11 and 0.18 <= waits[1] <= 0.22
    url, data, headers, timeout_s = script.calls[0]
    assert (url, data, timeout_s) == (URL, b"{}", 5.0)
    assert headers["Idempotency-Key"] == "abc"
    assert headers["Content-Type"] == "application/json"


def test_retries_spent_is_failed_after_retries_plus_one_attempts() -> None:
    delivery, waits = _deliver(Script(Attempt(502)), retries=2)
    assert (delivery.outcome, len(delivery.attempts), len(waits)) == ("failed", 3, 2)
    assert delivery.last.describe() == "HTTP 502"


@pytest.mark.parametrize("status", [400, 401, 404, 410, 301, 302])
def test_other_4xx_and_3xx_are_refused_at_once(status: int) -> None:
    delivery, waits = _deliver(Script(Attempt(status)))
    assert (delivery.outcome, len(delivery.attempts), waits) == ("rejected", 1, [])


def test_retry_after_replaces_the_backoff_and_is_capped() -> None:
    delivery, waits = _deliver(Script(Attempt(429, retry_after_s=3),
                                      Attempt(503, retry_after_s=999), Attempt(200)))
    assert delivery.outcome == "delivered"
    assert waits == [3, MAX_BACKOFF_S]


def test_a_stop_while_waiting_interrupts() -> None:
    target = WebhookTarget.build(URL, retries=5)
    delivery = Webhook(target, Script(Attempt(500))).deliver(b"{}", "abc", wait=lambda s: True)
    assert (delivery.outcome, len(delivery.attempts)) == ("interrupted", 1)


def test_attempt_kinds() -> None:
    kinds = [Attempt(s, e).kind for s, e in ((200, ""), (0, "timeout after 5 s"),
                                              (0, "connection error: x"), (429, ""),
                                              (404, ""), (503, ""), (301, ""))]
    assert kinds == ["ok", "timeout", "connection", "http_429", "http_4xx", "http_5xx",
                     "http_3xx"]


def test_json_body_is_the_wire_bytes() -> None:
    a = make_alert(3)
    assert body(WebhookTarget.build(URL), a, a.to_json()) == a.to_json()


def test_slack_message_escapes_and_keeps_a_few_evidence_fields() -> None:
    evidence = {f"f{i:02d}": i / 3 for i in range(10)} | {"a_note": "<b>&</b>", "big": "x" * 500}
    a = Alert.build(type="anomaly", severity="critical", score=0.5, subject="0x" + "ab" * 20,
                    detector="iforest", model_version="2", evidence=evidence,
                    source={"item_ids": ["t1"]}, event_time=1, detected_at=1_700_000_000)
    message = slack_message(a)
    target = WebhookTarget.build(URL, format="slack")
    assert orjson.loads(body(target, a, a.to_json())) == message
    assert message["text"] == (f"[CRITICAL] anomaly on {a.subject} (score 0.500, alert "
                               f"{a.alert_id})")
    header, fields, evidence_block, context = message["blocks"]
    assert header["text"] == {"type": "plain_text", "emoji": False, "text": "CRITICAL: anomaly"}
    assert "*Detected (stream time)*\n2023-11-14T22:13:20Z" in [f["text"]
                                                               for f in fields["fields"]]
    lines = evidence_block["text"]["text"].splitlines()
    assert lines[0] == "*Evidence*" and len(lines) == 1 + EVIDENCE_SHOWN + 1
    assert lines[-1] == f"… and {len(evidence) - EVIDENCE_SHOWN} more in the alert's JSON"
    assert "x" * 200 not in evidence_block["text"]["text"]  # long values are cut
    assert lines[1] == "• `a_note` &lt;b&gt;&amp;&lt;/b&gt;"  # Slack's escapes
    assert context["elements"][0]["text"] == f"alert `{a.alert_id}`"
