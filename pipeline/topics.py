"""Create the topics of architecture.md, idempotently."""

from __future__ import annotations

import time

from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from pipeline import clients
from pipeline.errors import BrokerError, ConfigError
from pipeline.settings import Settings


def ensure_topics(settings: Settings, timeout_s: float = 15.0,
                  replication_factor: int = 1) -> dict[str, str]:
    """Create every chainwatch topic that does not exist yet; wait until all are visible.

    New topics get ``replication_factor`` replicas (1 by default, which any broker takes; 3
    on a three-node Kafka cluster: ``chainwatch broker --engine kafka --nodes 3``). Returns
    topic name → ``"created"`` or ``"exists"``. Existing topics are left as they are, even if
    their partition count or replication differs.
    """
    if replication_factor < 1:
        raise ConfigError(f"replication factor {replication_factor} must be at least 1")
    wanted = {name: getattr(settings.partitions, role)
              for role, name in settings.topics.all().items()}
    outcome: dict[str, str] = {}
    client = clients.admin(settings)
    try:
        existing = set(client.list_topics())
        for name, partitions in wanted.items():
            if name in existing:
                outcome[name] = "exists"
                continue
            try:
                client.create_topics([NewTopic(name, partitions, replication_factor)])
                outcome[name] = "created"
            except TopicAlreadyExistsError:  # created concurrently by another service
                outcome[name] = "exists"
        deadline = time.monotonic() + timeout_s
        while not set(wanted) <= set(client.list_topics()):
            if time.monotonic() > deadline:
                missing = sorted(set(wanted) - set(client.list_topics()))
                raise BrokerError(f"topics {missing} did not appear within {timeout_s:.0f}s")
            time.sleep(0.1)
    finally:
        client.close()
    return outcome
