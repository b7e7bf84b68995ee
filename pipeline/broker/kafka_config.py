"""Apache Kafka's broker configuration, in one place: every ``server.properties`` the Kafka
engine writes comes from here, and ``deploy/docker-compose.yml``'s kafka service sets the same
values (``tests/unit/test_deploy_compose.py`` holds them to it).

Three parts, merged per node by :func:`node_properties`:

``BROKER``
    Every node of any cluster, the compose file's included: combined broker and controller
    (KRaft), no topics made behind chainwatch's back, no wait before a group's first
    rebalance, small internal topics so a first group join or transaction is quick.
:func:`replication`
    Replication of topics and of the internal topics for a cluster of ``nodes`` nodes:
    factor ``min(nodes, 3)``; ``min.insync.replicas`` 2 from three nodes on, else 1.
``LOCAL``
    Only the engine chainwatch runs itself, on small shared machines: a smaller log-cleaner
    buffer (the default takes 128 MB of heap) and a dead node fenced after 4 s instead of 9 s,
    so a failover test does not sit idle. Not in the compose file, where a longer pause of a
    busy host should not fence the broker.

Topology (node ids, ports, directories, the quorum) is added per node. The JVM options are
:data:`JVM_OPTIONS`.

>>> replication(3)["min.insync.replicas"], replication(1)["offsets.topic.replication.factor"]
('2', '1')
>>> compose_env_name("group.initial.rebalance.delay.ms")
'KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS'
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

KAFKA_VERSION: Final = "4.1.1"

BROKER: Final[Mapping[str, str]] = MappingProxyType({
    "process.roles": "broker,controller",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    # topics are created explicitly, with chainwatch's partition counts (chainwatch topics)
    "auto.create.topics.enable": "false",
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.num.partitions": "4",
})

LOCAL: Final[Mapping[str, str]] = MappingProxyType({
    "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "4000",
    "num.recovery.threads.per.data.dir": "1",
    # tests and `--session-timeout` use sessions of a few seconds (Kafka's floor is 6 s)
    "group.min.session.timeout.ms": "1000",
})

# Small heap, serial GC and the C1 compiler only: a quiet JVM on a 2-core machine shared with
# others; Kafka's own scripts add nothing the broker needs beyond these.
JVM_OPTIONS: Final = ("-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                      "-XX:+ExitOnOutOfMemoryError", "-XX:-UsePerfData",
                      "-Djava.awt.headless=true")
# kafka.tools.StorageTool, run once per node before its first start
FORMAT_JVM_OPTIONS: Final = ("-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                             "-XX:-UsePerfData", "-Djava.awt.headless=true")

_REPLICATION_FACTORS = ("default.replication.factor", "offsets.topic.replication.factor",
                        "transaction.state.log.replication.factor",
                        "share.coordinator.state.topic.replication.factor")
_MIN_ISRS = ("min.insync.replicas", "transaction.state.log.min.isr",
             "share.coordinator.state.topic.min.isr")


def replication(nodes: int) -> dict[str, str]:
    """Replication factors and minimum in-sync replicas for a cluster of ``nodes`` nodes."""
    if nodes < 1:
        raise ValueError(f"a cluster has at least one node, not {nodes}")
    factor = min(nodes, 3)
    min_isr = 2 if factor >= 3 else 1
    return ({key: str(factor) for key in _REPLICATION_FACTORS}
            | {key: str(min_isr) for key in _MIN_ISRS})


def shared_settings(nodes: int) -> dict[str, str]:
    """What every node of an ``nodes``-node cluster gets, whoever runs it (compose included)."""
    return dict(BROKER) | replication(nodes)


def kafka_uuid() -> str:
    """A random id as Kafka writes one (URL-safe base64 of 16 bytes, no padding), usable as a
    cluster id or a KRaft directory id; like Kafka, never one that starts with a dash."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


@dataclass(frozen=True)
class NodeLayout:
    """Where one node listens and who it is: kept in a durable cluster's ``cluster.json``."""

    node_id: int
    port: int             # clients and the other brokers (PLAINTEXT)
    controller_port: int  # the KRaft quorum (CONTROLLER)
    directory_id: str     # the node's metadata directory id in the quorum's voter set


def voters(cluster: Sequence[NodeLayout], host: str) -> str:
    """``--initial-controllers`` of ``kafka.tools.StorageTool format``: id@host:port:dir, …"""
    return ",".join(f"{n.node_id}@{host}:{n.controller_port}:{n.directory_id}" for n in cluster)


def node_properties(node: NodeLayout, cluster: Sequence[NodeLayout], host: str,
                    log_dir: Path) -> dict[str, str]:
    """The whole ``server.properties`` of ``node`` in ``cluster``, storing in ``log_dir``."""
    return shared_settings(len(cluster)) | dict(LOCAL) | {
        "node.id": str(node.node_id),
        "listeners": f"PLAINTEXT://{host}:{node.port},CONTROLLER://{host}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{node.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.quorum.bootstrap.servers": ",".join(
            f"{host}:{n.controller_port}" for n in cluster),
        "log.dirs": str(log_dir),
    }


def _escape(value: str) -> str:
    r"""A value as ``java.util.Properties.load`` reads it back (Latin-1 file, \uXXXX beyond)."""
    out = []
    for char in value:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif 32 <= code < 127:
            out.append(char)
        elif code > 0xFFFF:  # a surrogate pair, as Java strings hold it
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    text = "".join(out)
    return "\\" + text if text.startswith(" ") else text


def render_properties(properties: Mapping[str, str]) -> str:
    """``key=value`` lines, sorted, escaped for Java.

    >>> print(render_properties({"log.dirs": "/data/k\\u00e4fka", "node.id": "1"}), end="")
    # written by chainwatch (pipeline/broker/kafka_config.py); changes here are overwritten
    log.dirs=/data/k\\u00e4fka
    node.id=1
    """
    lines = ["# written by chainwatch (pipeline/broker/kafka_config.py); changes here are "
             "overwritten"]
    lines += [f"{key}={_escape(properties[key])}" for key in sorted(properties)]
    return "\n".join(lines) + "\n"


def compose_env_name(key: str) -> str:
    """The ``apache/kafka`` image's environment variable for a broker setting: ``KAFKA_``, then
    the key upper-cased with ``_`` → ``__``, ``-`` → ``___`` and ``.`` → ``_``."""
    return "KAFKA_" + key.replace("_", "__").replace("-", "___").replace(".", "_").upper()
