"""Kafka clients built from :class:`~pipeline.settings.Settings`, and only from it."""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from pipeline.errors import BrokerError
from pipeline.settings import Settings


def _unreachable(settings: Settings, exc: Exception) -> BrokerError:
    return BrokerError(
        f"cannot reach Kafka at {settings.bootstrap_servers} ({type(exc).__name__}); start one "
        "with `chainwatch broker` or set --bootstrap / CHAINWATCH_BOOTSTRAP_SERVERS"
    )


def admin(settings: Settings) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(**settings.admin_config())
    except KafkaError as exc:
        raise _unreachable(settings, exc) from exc


def producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    try:
        return KafkaProducer(**settings.producer_config(**overrides))
    except KafkaError as exc:
        raise _unreachable(settings, exc) from exc


def consumer(settings: Settings, *topics: str, group_id: str | None = None,
             **overrides: Any) -> KafkaConsumer:
    try:
        return KafkaConsumer(*topics, **settings.consumer_config(group_id, **overrides))
    except KafkaError as exc:
        raise _unreachable(settings, exc) from exc
