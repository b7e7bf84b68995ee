"""Kafka clients built from :class:`~pipeline.settings.Settings`, and only from it.

Every constructor runs under a wall-clock bound: kafka-python bounds its bootstrap
(``bootstrap_timeout_ms``) between connection attempts but not inside one, and a TLS
handshake against a plaintext listener (``security.protocol`` SSL or SASL_SSL, a PLAINTEXT
port) waits for the server's answer forever. Past the bound the caller gets a
:class:`~pipeline.errors.BrokerError` saying what to check, instead of a hang.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from pipeline.errors import BrokerError
from pipeline.settings import Settings

CONSTRUCT_GRACE_S = 5.0  # beyond bootstrap_timeout_ms: the version probe, the first metadata

_Client = TypeVar("_Client", KafkaAdminClient, KafkaProducer, KafkaConsumer)


def _unreachable(settings: Settings, exc: Exception) -> BrokerError:
    return BrokerError(
        f"cannot reach Kafka at {settings.bootstrap_servers} ({type(exc).__name__}); start one "
        "with `chainwatch broker` or set --bootstrap / CHAINWATCH_BOOTSTRAP_SERVERS"
    )


def _no_answer(settings: Settings, bound_s: float) -> BrokerError:
    protocol = settings.security.protocol
    return BrokerError(
        f"no answer from Kafka at {settings.bootstrap_servers} within {bound_s:.0f} s with "
        f"security protocol {protocol}; check that the listener there speaks {protocol} (a "
        "PLAINTEXT listener never answers a TLS handshake), or change --bootstrap / "
        "CHAINWATCH_BOOTSTRAP_SERVERS / CHAINWATCH_SECURITY_PROTOCOL"
    )


def _construct(settings: Settings, config: dict[str, Any],
               build: Callable[[], _Client]) -> _Client:
    """``build()`` in a daemon thread, waited for at most the bootstrap timeout plus a grace.

    A constructor still running at the deadline is abandoned; should it finish later, its
    client is closed.
    """
    bound_s = config.get("bootstrap_timeout_ms", 10_000) / 1000 + CONSTRUCT_GRACE_S
    result: list[_Client] = []
    failure: list[BaseException] = []
    lock = threading.Lock()
    abandoned = threading.Event()

    def run() -> None:
        try:
            client = build()
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)
            return
        with lock:
            if abandoned.is_set():
                client.close()
            else:
                result.append(client)

    thread = threading.Thread(target=run, name="chainwatch-kafka-connect", daemon=True)
    thread.start()
    thread.join(bound_s)
    with lock:
        if result:
            return result[0]
        if not failure:
            abandoned.set()
            raise _no_answer(settings, bound_s)
    exc = failure[0]
    if isinstance(exc, KafkaError):
        raise _unreachable(settings, exc) from exc
    raise exc


def admin(settings: Settings) -> KafkaAdminClient:
    config = settings.admin_config()
    return _construct(settings, config, lambda: KafkaAdminClient(**config))


def producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    config = settings.producer_config(**overrides)
    return _construct(settings, config, lambda: KafkaProducer(**config))


def consumer(settings: Settings, *topics: str, group_id: str | None = None,
             **overrides: Any) -> KafkaConsumer:
    config = settings.consumer_config(group_id, **overrides)
    return _construct(settings, config, lambda: KafkaConsumer(*topics, **config))


METADATA_RETRY_S = 60.0  # a node of the cluster may be down a while; the others answer


def partitions_for(consumer: KafkaConsumer, topic: str,
                   timeout_s: float = METADATA_RETRY_S) -> set[int]:
    """The partition numbers of ``topic`` (empty if it does not exist).

    kafka-python raises a connection error when the node it asks for metadata is down, even
    while other nodes of the cluster answer; this asks again, with a growing pause, for up
    to ``timeout_s``, then raises BrokerError.
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.1
    while True:
        try:
            return set(consumer.partitions_for_topic(topic) or ())
        except KafkaError as exc:
            if time.monotonic() + pause > deadline:
                raise BrokerError(f"no Kafka node answered for the partitions of {topic} "
                                  f"within {timeout_s:.0f} s ({type(exc).__name__}); check the "
                                  "brokers") from exc
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


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
