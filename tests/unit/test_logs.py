"""Structured logs: the JSON formatter, the text default, and secrets that never get out."""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline import logs
from pipeline.cli.common import load_settings
from pipeline.errors import ConfigError
from pipeline.logs import MASK, JsonFormatter, RedactSecrets
from pipeline.settings import Settings

PASSWORD = 'n0t-"so"-s3cret\\pw'  # quotes and a backslash: escaped in repr and JSON


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure() changes process-wide logging; put it back after each test."""
    root, kafka = logging.getLogger(), logging.getLogger("kafka")
    level, kafka_level, handlers = root.level, kafka.level, list(root.handlers)
    yield
    logs.reset()
    root.setLevel(level)
    kafka.setLevel(kafka_level)
    assert root.handlers == handlers


def record(msg: str, *args: object, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("chainwatch.test", logging.WARNING, __file__, 7, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_and_extras() -> None:
    out = JsonFormatter().format(record("task %s opened", "p0001", task="p0001", n=3))
    doc = json.loads(out)
    assert "\n" not in out
    assert doc["level"] == "WARNING"
    assert doc["logger"] == "chainwatch.test"
    assert doc["message"] == "task p0001 opened"
    assert doc["time"].endswith("Z") and doc["time"][10] == "T"
    assert (doc["task"], doc["n"]) == ("p0001", 3)


def test_json_lines_carry_the_exception_text() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
        rec.exc_info = sys.exc_info()
    out = JsonFormatter().format(rec)
    assert len(out.splitlines()) == 1
    doc = json.loads(out)
    assert doc["message"] == "failed"
    assert doc["exception"].startswith("Traceback")
    assert "ValueError: bad\nthing" in doc["exception"]


def test_configure_text_is_the_default_and_json_is_one_object_a_line() -> None:
    text, jsonl = io.StringIO(), io.StringIO()
    logs.configure("INFO", "text", stream=text)
    logging.getLogger("chainwatch.a").info("hello %d", 1)
    logs.configure("INFO", "json", stream=jsonl)  # replaces the first handler
    logging.getLogger("chainwatch.a").info("hello %d", 2)
    logging.getLogger("chainwatch.a").debug("below the level")
    assert text.getvalue().rstrip().endswith("INFO chainwatch.a: hello 1")
    assert [d["message"] for d in lines(jsonl)] == ["hello 2"]


def test_announce_is_plain_text_or_a_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("WARNING", "text")
    logs.announce("chainwatch score: started")  # shown below the level: a status line
    assert capsys.readouterr().err == "chainwatch score: started\n"
    logs.configure("WARNING", "json")
    logs.announce("chainwatch score: error: x", logging.ERROR)
    doc = json.loads(capsys.readouterr().err)
    assert (doc["level"], doc["message"]) == ("ERROR", "chainwatch score: error: x")


def test_redaction_covers_message_args_escapes_exception_and_extras() -> None:
    redact = RedactSecrets([PASSWORD, ""])
    rec = record("config %s / %r / %s", {"pw": PASSWORD}, PASSWORD, json.dumps(PASSWORD),
                 extra_field=f"pw={PASSWORD}")
    try:
        raise RuntimeError(f"login failed for {PASSWORD}")
    except RuntimeError:
        rec.exc_info = sys.exc_info()
    assert redact.filter(rec) is True
    out = JsonFormatter().format(rec)
    assert "s3cret" not in out
    assert out.count(MASK) >= 5


def test_a_record_whose_arguments_do_not_fit_is_kept_without_them() -> None:
    rec = record("two %s %s", PASSWORD)
    assert RedactSecrets([PASSWORD]).filter(rec) is True
    assert rec.getMessage() == "two %s %s [arguments dropped: they do not fit the format]"


def test_a_sasl_password_never_reaches_a_json_log(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Settings loaded the way every command loads them, then the worst cases: the settings,
    the client config dicts (kafka-python logs these at DEBUG), and an error quoting it."""
    monkeypatch.setenv("CHAINWATCH_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CHAINWATCH_SECURITY_SASL_USERNAME", "chainwatch")
    monkeypatch.setenv("CHAINWATCH_SECURITY_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("CHAINWATCH_STORAGE_S3_SECRET_KEY", "s3-secret-key-value")
    args = argparse.Namespace(config=None, bootstrap="kafka-1:9093", log_level="DEBUG",
                              log_format="json")
    settings = load_settings(args)
    assert settings.security.sasl_password.get() == PASSWORD
    assert settings.producer_config()["sasl_plain_password"] == PASSWORD

    log = logging.getLogger("chainwatch.leaky")
    log.info("settings: %r", settings)
    log.info("producer config: %s", settings.producer_config())
    logging.getLogger("kafka.admin.client").debug(
        "Starting KafkaAdminClient with configuration: %s", settings.admin_config())
    log.warning("password is %s", settings.security.sasl_password.get())
    log.warning("keys", extra={"s3": settings.storage.s3_secret_key.get(),
                               "config": settings.consumer_config()})
    try:
        raise ConnectionError(f"SASL authentication failed with password {PASSWORD!r}")
    except ConnectionError:
        log.exception("connect failed")

    err = capsys.readouterr().err
    assert "s3cret" not in err
    assert "s3-secret-key-value" not in err
    docs = [json.loads(line) for line in err.splitlines()]
    assert len(docs) == 6
    assert {d["logger"] for d in docs} == {"chainwatch.leaky", "kafka.admin.client"}
    assert "sasl_plain_password': '**********'" in docs[2]["message"]
    assert "chainwatch" in docs[1]["message"]  # the username is not a secret
    assert "SASL authentication failed" in docs[5]["exception"]
    assert docs[4]["config"]["sasl_plain_password"] == MASK
    assert docs[4]["config"]["enable_auto_commit"] is False  # other values keep their type


def test_secrets_of_walks_nested_settings() -> None:
    settings = Settings.load(env={"CHAINWATCH_SECURITY_SSL_PASSWORD": "a1",
                                  "CHAINWATCH_STORAGE_S3_ACCESS_KEY": "b2"})
    assert sorted(logs.secrets_of(settings)) == ["a1", "b2"]
    assert logs.secrets_of(Settings()) == []


def test_log_format_is_a_validated_setting() -> None:
    assert Settings.load(env={"CHAINWATCH_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="log_format 'xml' is not one of text, json"):
        Settings.load(env={"CHAINWATCH_LOG_FORMAT": "xml"})
