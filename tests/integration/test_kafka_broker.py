"""Integration tests of pipeline.broker.KafkaBroker: Apache Kafka 4.1.1 from the cached jars.

A single node takes records and isolates transactions, and a durable one comes back with its
records and committed offsets; ``chainwatch broker --engine kafka`` prints a bootstrap that
works, and its bad arguments are one line. These run with either engine (they start their own
brokers from the jars ``.ci/tools.sh`` fetched). The three-node cluster's tests (marked
``kafka_cluster``) run with ``--broker-engine kafka``: replication factor 3, a SIGKILLed
partition leader's node, its restart, a paused node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, NewTopic

from pipeline.broker import KafkaBroker, free_port
from pipeline.broker.kafka_config import KAFKA_VERSION
from pipeline.broker.kafka_runtime import KAFKA_HOME_ENV
from pipeline.broker.processes import kafka_metadata, port_is_free
from tests.conftest import CHAINWATCH, consume_all
from tests.helpers import refused_connections_leak

pytestmark = pytest.mark.integration

FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _create(bootstrap: str, topic: str, partitions: int = 1, replication: int = 1) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, replication)], wait_for_metadata=True)
    finally:
        admin.close()


def _consumer(bootstrap: str, topic: str, **config: Any) -> KafkaConsumer:
    return KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                         **(FAST_GROUP | {"group_id": _name("g")} | config))


@pytest.fixture(scope="module")
def single(kafka_home: Path) -> Iterator[KafkaBroker]:
    with KafkaBroker(home=kafka_home) as broker:
        yield broker


# --- one node ------------------------------------------------------------------------------


def test_single_node_takes_produce_and_consume(single: KafkaBroker) -> None:
    assert single.is_running() and single.pid is not None
    assert single.bootstrap == f"127.0.0.1:{single.port}"
    assert [node.node_id for node in single.nodes] == [1]
    assert single.log_path is not None and "Kafka Server started" in single.log_path.read_text()
    topic = _name("t")
    _create(single.bootstrap, topic, partitions=2)
    producer = KafkaProducer(bootstrap_servers=single.bootstrap, acks="all")
    for i in range(100):
        producer.send(topic, key=str(i).encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()
    consumer = _consumer(single.bootstrap, topic)
    try:
        got = consume_all(consumer, 100)
    finally:
        consumer.close()
    assert sorted(m.value for m in got) == sorted(f"v{i}".encode() for i in range(100))


def test_read_committed_hides_aborted_transactions(single: KafkaBroker) -> None:
    topic = _name("t")
    _create(single.bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=single.bootstrap, transactional_id=_name("tx"))
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, value=b"aborted")
        producer.flush()
        producer.abort_transaction()
        producer.begin_transaction()
        producer.send(topic, value=b"committed")
        producer.commit_transaction()
    finally:
        producer.close()
    committed = _consumer(single.bootstrap, topic, isolation_level="read_committed")
    uncommitted = _consumer(single.bootstrap, topic, isolation_level="read_uncommitted")
    try:
        assert [m.value for m in consume_all(committed, 1)] == [b"committed"]
        assert [m.value for m in consume_all(uncommitted, 2)] == [b"aborted", b"committed"]
    finally:
        committed.close()
        uncommitted.close()


def test_temporary_storage_is_removed_and_the_ports_freed_on_stop(kafka_home: Path) -> None:
    broker = KafkaBroker(home=kafka_home).start()
    node = broker.nodes[0]
    directory, pid = node.directory, broker.pid
    assert pid is not None and directory.is_dir()
    broker.stop()
    assert not directory.exists()
    assert not broker.is_running() and broker.pid is None
    assert port_is_free("127.0.0.1", node.port) and port_is_free("127.0.0.1",
                                                                   node.controller_port)
    broker.stop()  # twice is fine


def test_durable_restart_keeps_topics_records_and_committed_offsets(
        kafka_home: Path, tmp_path: Path) -> None:
    data_dir, port = tmp_path / "kafka", free_port()
    topic, group = _name("t"), _name("g")
    with KafkaBroker(port=port, data_dir=data_dir, home=kafka_home) as broker:
        assert broker.durable and (data_dir / "cluster.json").is_file()
        _create(broker.bootstrap, topic)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        for i in range(50):
            producer.send(topic, value=f"r{i}".encode())
        producer.flush()
        producer.close()
        consumer = _consumer(broker.bootstrap, topic, group_id=group, enable_auto_commit=False,
                             max_poll_records=30)
        got: list[Any] = []
        deadline = time.monotonic() + 20
        while len(got) < 30 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=30 - len(got)).values():
                got.extend(records)
        assert len(got) == 30
        consumer.commit()
        consumer.close()
        first_cluster = broker.cluster_id
    assert port_is_free("127.0.0.1", port)
    with KafkaBroker(port=port, data_dir=data_dir, home=kafka_home) as again:
        assert again.cluster_id == first_cluster
        resumed = _consumer(again.bootstrap, topic, group_id=group, enable_auto_commit=False)
        rest = consume_all(resumed, 20)
        tp = TopicPartition(topic, 0)
        assert resumed.committed(tp) == 30
        resumed.close()
        everything = _consumer(again.bootstrap, topic)
        all_records = consume_all(everything, 50)
        everything.close()
    assert [m.value for m in rest] == [f"r{i}".encode() for i in range(30, 50)]
    assert [m.value for m in all_records] == [f"r{i}".encode() for i in range(50)]


# --- the CLI, as a user types it --------------------------------------------------------------


def _cli_env(kafka_home: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ) | {KAFKA_HOME_ENV: str(kafka_home)} | extra


def test_cli_broker_engine_kafka_prints_a_working_bootstrap(kafka_home: Path) -> None:
    with subprocess.Popen([CHAINWATCH, "broker", "--engine", "kafka"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env=_cli_env(kafka_home)) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            bootstrap = process.stdout.readline().strip()
            assert bootstrap.startswith("127.0.0.1:"), process.stderr.read()
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            try:
                assert {"chain.transactions", "chain.dex", "chainwatch.alerts"} <= set(
                    admin.list_topics())
            finally:
                admin.close()
            producer = KafkaProducer(bootstrap_servers=bootstrap)
            producer.send("chainwatch.dlq", value=b"hello").get(timeout=10)
            producer.close()
            consumer = _consumer(bootstrap, "chainwatch.dlq")
            assert [m.value for m in consume_all(consumer, 1)] == [b"hello"]
            consumer.close()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        stderr = process.stderr.read()
    assert port_is_free("127.0.0.1", int(bootstrap.rsplit(":", 1)[1]))
    assert "(Kafka, temporary storage); Ctrl-C to stop" in stderr
    assert stderr.strip().endswith("chainwatch broker: stopped")


def _one_line_error(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run([CHAINWATCH, "broker", *args], capture_output=True, text=True,
                            env=env, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_cli_nodes_3_with_tansu_is_one_line(kafka_home: Path) -> None:
    line = _one_line_error("--nodes", "3", env=_cli_env(kafka_home))
    assert "--nodes 3 needs --engine kafka" in line


def test_cli_without_java_is_one_line(kafka_home: Path, tmp_path: Path) -> None:
    env = _cli_env(kafka_home, PATH=str(tmp_path))
    env.pop("JAVA_HOME", None)
    line = _one_line_error("--engine", "kafka", env=env)
    assert "needs Java 17 or newer" in line and "no `java` on PATH" in line


def test_cli_without_cache_and_maven_is_one_line(tmp_path: Path) -> None:
    java = subprocess.run(["sh", "-c", "command -v java"], capture_output=True, text=True,
                          check=True).stdout.strip()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(Path(java).resolve())
    env = _cli_env(tmp_path / "empty-cache", PATH=str(bin_dir))
    env.pop("JAVA_HOME", None)
    line = _one_line_error("--engine", "kafka", env=env)
    assert f"Kafka {KAFKA_VERSION}'s jars are not in" in line
    assert "Maven (mvn) is not on PATH" in line
    assert not (tmp_path / "empty-cache").exists()  # nothing was started or written


def test_cli_checksum_mismatch_is_one_line(kafka_home: Path, tmp_path: Path) -> None:
    libs = tmp_path / "home" / "libs"
    libs.mkdir(parents=True)
    jars = sorted((kafka_home / "libs").glob("*.jar"))
    for jar in jars[1:]:
        (libs / jar.name).symlink_to(jar)
    (libs / jars[0].name).write_bytes(jars[0].read_bytes() + b"\0")
    line = _one_line_error("--engine", "kafka", env=_cli_env(tmp_path / "home"))
    assert line.startswith("chainwatch broker: error: checksum mismatch: ")
    assert jars[0].name in line


# --- three nodes ---------------------------------------------------------------------------


def _topic_config(bootstrap: str, topic: str, key: str) -> str:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_configs([ConfigResource("TOPIC", topic, [key])],
                                           config_filter="all")
    finally:
        admin.close()
    return str(described["topic"][topic][key]["value"])


def _replicas(bootstrap: str, topic: str) -> list[tuple[list[int], list[int]]]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        partitions = admin.describe_topics([topic])[0]["partitions"]
    finally:
        admin.close()
    return [(sorted(p["replica_nodes"]), sorted(p["isr_nodes"]))
            for p in sorted(partitions, key=lambda p: p["partition_index"])]


@pytest.mark.kafka_cluster
def test_cluster_has_three_brokers_and_replicates_three_times(kafka_cluster: KafkaBroker) -> None:
    assert [node.node_id for node in kafka_cluster.nodes] == [1, 2, 3]
    assert len(kafka_cluster.bootstrap.split(",")) == 3
    for node in kafka_cluster.nodes:
        metadata = kafka_metadata("127.0.0.1", node.port)
        assert metadata is not None and metadata.brokers == {1, 2, 3}
    topic = _name("t")
    admin = KafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap)
    try:  # replication factor -1: the broker's default
        admin.create_topics({topic: {"num_partitions": 3}}, wait_for_metadata=True)
    finally:
        admin.close()
    assert _replicas(kafka_cluster.bootstrap, topic) == [([1, 2, 3], [1, 2, 3])] * 3
    assert _topic_config(kafka_cluster.bootstrap, topic, "min.insync.replicas") == "2"
    # the group and transaction state topics are replicated the same way
    producer = KafkaProducer(bootstrap_servers=kafka_cluster.bootstrap,
                             transactional_id=_name("tx"))
    producer.init_transactions()
    producer.close()
    consumer = _consumer(kafka_cluster.bootstrap, topic)
    consume_all(consumer, 1, timeout_s=3)
    consumer.close()
    for internal in ("__consumer_offsets", "__transaction_state"):
        assert {tuple(r) for r, _ in _replicas(kafka_cluster.bootstrap, internal)} == {
            (1, 2, 3)}, internal
        assert _topic_config(kafka_cluster.bootstrap, internal, "min.insync.replicas") == "2"


@pytest.mark.kafka_cluster
def test_cluster_survives_sigkill_of_a_partition_leader_and_its_restart(
        kafka_cluster: KafkaBroker) -> None:
    topic = _name("t")
    _create(kafka_cluster.bootstrap, topic, partitions=1, replication=3)
    leader = kafka_cluster.leader_of(topic, 0)
    assert leader in (1, 2, 3)
    with refused_connections_leak():
        failover_s = _kill_the_leader_and_restart_it(kafka_cluster, topic, leader)
    assert kafka_cluster.is_running()
    print(f"failover after SIGKILL of node {leader}: {failover_s:.1f} s")


def _kill_the_leader_and_restart_it(kafka_cluster: KafkaBroker, topic: str,
                                    leader: int) -> float:
    producer = KafkaProducer(bootstrap_servers=kafka_cluster.bootstrap, acks="all",
                             enable_idempotence=True, retries=20, request_timeout_ms=15000,
                             delivery_timeout_ms=60000)
    try:
        for i in range(100):
            producer.send(topic, value=f"m{i}".encode())
        producer.flush()
        killed = kafka_cluster.node(leader)
        killed.kill()
        assert not killed.is_running() and killed.pid is None
        started = time.monotonic()
        for i in range(100, 200):  # acks=all: each is on both remaining replicas
            producer.send(topic, value=f"m{i}".encode()).get(timeout=60)
        failover_s = time.monotonic() - started
        new_leader = kafka_cluster.leader_of(topic, 0)
        assert new_leader not in (None, leader)
        consumer = _consumer(kafka_cluster.bootstrap, topic)
        values = [m.value for m in consume_all(consumer, 200, timeout_s=30)]
        consumer.close()
        assert values == [f"m{i}".encode() for i in range(200)]
        killed.start()  # same ports, same data: it catches up and rejoins the ISR
        assert killed.is_running()
        deadline = time.monotonic() + 30
        while _replicas(kafka_cluster.bootstrap, topic)[0][1] != [1, 2, 3]:
            assert time.monotonic() < deadline, "the restarted node did not rejoin the ISR"
            time.sleep(0.2)
        producer.send(topic, value=b"after").get(timeout=30)
    finally:
        producer.close()
    return failover_s


@pytest.mark.kafka_cluster
def test_a_paused_node_stops_answering_and_resumes(kafka_cluster: KafkaBroker) -> None:
    node = kafka_cluster.nodes[-1]
    node.pause()
    try:
        assert node.is_running()
        assert kafka_metadata("127.0.0.1", node.port) is None
    finally:
        node.resume()
    deadline = time.monotonic() + 20
    while not node.ready():
        assert time.monotonic() < deadline
        time.sleep(0.1)
