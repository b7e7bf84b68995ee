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


def caught_up(consumer: KafkaConsumer) -> bool:
    """Every assigned partition read up to its high-water mark (False before assignment).

    The high-water mark from fetch responses is used, not ListOffsets, which the local
    broker answers wrongly (see tests/integration/test_broker_defects.py).
    """
    assigned = consumer.assignment()
    if not assigned:
        return False
    for tp in assigned:
        high = consumer.highwater(tp)
        if high is None or consumer.position(tp) < high:
            return False
    return True
