"""``chainwatch alerts notify`` as a user types it: one-line errors, a run, a SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest
from kafka import KafkaProducer

from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import CHAINWATCH, cli_env, free_port, http_get, unique
from tests.helpers import send_alerts
from tests.webhook_server import Reply, WebhookServer

pytestmark = pytest.mark.e2e
SECRET = "s3cr3t-token"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINWATCH_NOTIFY_")}
    return env | {"CHAINWATCH_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"} | extra


@pytest.mark.parametrize(("args", "env", "words"), [
    (["--format", "xml"], {}, "argument --format: invalid choice: 'xml'"),
    (["--min-severity", "urgent"], {}, "argument --min-severity: invalid choice: 'urgent'"),
    ([], {}, "no webhook URL; give --webhook-url or set CHAINWATCH_NOTIFY_WEBHOOK_URL"),
    (["--webhook-url", f"ftp://files.example.com/{SECRET}"], {}, "must be http:// or https://"),
    ([], {"CHAINWATCH_NOTIFY_WEBHOOK_URL": f"hooks.example.com/{SECRET}"},
     "no http(s) scheme"),
    (["--webhook-url", "https://h.example.com/x"], {"CHAINWATCH_NOTIFY_FORMAT": "xml"},
     "notify format 'xml' is not one of json, slack"),
])
def test_bad_arguments_are_one_line_and_exit_2_before_any_work(
        args: list[str], env: dict[str, str], words: str) -> None:
    started = time.monotonic()
    result = subprocess.run([CHAINWATCH, "alerts", "notify", *args], capture_output=True,
                            text=True, timeout=60, env=_env(**env), check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert SECRET not in result.stderr and result.stdout == ""
    assert time.monotonic() - started < 10  # no Kafka was tried (nothing listens there)


def test_a_run_delivers_and_a_sigterm_stops_it(
        settings: Settings, producer_factory: Callable[..., KafkaProducer]) -> None:
    ensure_topics(settings)
    alerts = send_alerts(settings, range(20), producer_factory)
    with WebhookServer([Reply(500), Reply(200)]) as server:
        env = cli_env(settings) | {"CHAINWATCH_NOTIFY_WEBHOOK_URL": server.url(),
                                   "CHAINWATCH_NOTIFY_BACKOFF_MS": "10"}
        group = unique("notify")
        result = subprocess.run(
            [CHAINWATCH, "alerts", "notify", "--format", "slack", "--min-severity", "high",
             "--group", group, "--session-timeout", "2", "--until-caught-up", "--json",
             "--log-level", "DEBUG"],
            capture_output=True, text=True, timeout=120, env=env, check=False)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert {k: summary[k] for k in ("consumed", "delivered", "retries", "attempts",
                                        "dead_lettered", "filtered", "webhook")} == {
            "consumed": 20, "delivered": 20, "retries": 1, "attempts": 21,
            "dead_lettered": 0, "filtered": 0, "webhook": f"http://127.0.0.1:{server.port}"}
        assert SECRET not in result.stderr and SECRET not in result.stdout
        keys = {r.headers["Idempotency-Key"] for r in server.requests}
        assert keys == {a.alert_id for a in alerts}

        # the same group again, as a service: nothing new to send; it serves its metrics and
        # health, and SIGTERM stops it cleanly
        port = free_port()
        proc = subprocess.Popen([CHAINWATCH, "alerts", "notify", "--group", group,
                                 "--session-timeout", "2", "--metrics-port", str(port)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 60
        ready = 0
        while ready != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
            ready, _ = http_get(f"http://127.0.0.1:{port}/readyz")
        status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
        proc.send_signal(signal.SIGTERM)
        assert ready == 200 and status == 200
        assert "chainwatch_notify_deliveries_total" in metrics
        assert "chainwatch_notify_delivery_seconds_bucket" in metrics
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "delivered 0 alerts" in err and SECRET not in err
    assert len(server.requests) == 21
