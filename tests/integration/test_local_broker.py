"""Integration tests of pipeline.broker.LocalBroker against the real Tansu binary.

Each test starts its own brokers (memory-backed, or durable through the local S3 server) and
checks what the module promises: Kafka clients work, stop leaves no process behind, durable
data survives ``kill -9`` and a restart, and children die with a SIGKILLed parent. Tansu's
own tests: they run with the tansu engine only (the Kafka engine's are in
test_kafka_broker.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from pipeline.broker import LocalBroker, free_port
from pipeline.errors import BrokerError

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _tansu_engine_only(broker_engine: str) -> None:
    if broker_engine != "tansu":
        pytest.skip("LocalBroker (Tansu) tests: this session runs --broker-engine kafka; "
                    "they run with --broker-engine tansu")

REPO = Path(__file__).resolve().parents[2]
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _process_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (a zombie nobody reaps counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pid: int, timeout_s: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not _process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for i, value in enumerate(values):
            producer.send(topic, key=f"k{i}".encode(), value=value)
        producer.flush(timeout=10)
    finally:
        producer.close()


def _read_all(bootstrap: str, topic: str, partitions: int, expected: int) -> list[bytes]:
    """Every record of ``topic`` from the beginning, without a consumer group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        got: list[bytes] = []
        deadline = time.monotonic() + 15
        while len(got) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                got.extend(r.value for r in records)
        return got
    finally:
        consumer.close()


def _consume_in_group(bootstrap: str, topic: str, group: str, count: int) -> list[bytes]:
    """Consume ``count`` records as member of ``group``, commit, leave."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             max_poll_records=count, **FAST_GROUP)
    try:
        got: list[bytes] = []
        deadline = time.monotonic() + 15
        while len(got) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                got.extend(r.value for r in records)
        consumer.commit()
        return got
    finally:
        consumer.close()


def _group_positions(bootstrap: str, topic: str, group: str) -> dict[TopicPartition, int]:
    """Where a new member of ``group`` starts reading each partition of ``topic``."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             **FAST_GROUP)
    try:
        deadline = time.monotonic() + 15
        while not consumer.assignment() and time.monotonic() < deadline:
            assert not consumer.poll(timeout_ms=200), "the group should have nothing left"
        return {tp: consumer.position(tp) for tp in consumer.assignment()}
    finally:
        consumer.close()


def _committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        return {tp: meta.offset for tp, meta in admin.list_group_offsets(group)[group].items()}
    finally:
        admin.close()


def _topics(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def _round_trip(bootstrap: str) -> None:
    topic = _name("rt")
    _create_topic(bootstrap, topic)
    _produce(bootstrap, topic, [b"hello"])
    assert _read_all(bootstrap, topic, 1, 1) == [b"hello"]


@pytest.fixture
def memory_broker() -> Iterator[LocalBroker]:
    broker = LocalBroker()
    yield broker.start()
    broker.stop()


def test_memory_broker_round_trip_and_stop_leaves_nothing(
        memory_broker: LocalBroker) -> None:
    assert memory_broker.is_running()
    assert not memory_broker.durable
    pid = memory_broker.pid
    assert pid is not None and memory_broker.s3_pid is None
    _round_trip(memory_broker.bootstrap)

    memory_broker.stop()
    assert not memory_broker.is_running()
    assert _process_gone(pid) and _group_gone(pid)
    memory_broker.stop()  # a second stop is harmless


def test_consumer_group_commit_on_memory_broker(memory_broker: LocalBroker) -> None:
    topic, group = _name("t"), _name("g")
    _create_topic(memory_broker.bootstrap, topic, partitions=2)
    _produce(memory_broker.bootstrap, topic, [f"v{i}".encode() for i in range(10)])
    assert len(_consume_in_group(memory_broker.bootstrap, topic, group, 10)) == 10
    assert sum(_committed(memory_broker.bootstrap, group).values()) == 10


def test_context_manager_starts_and_stops() -> None:
    with LocalBroker() as broker:
        assert broker.is_running()
        pid = broker.pid
        assert pid is not None
        assert broker.start() is broker and broker.pid == pid  # start again: same process
        _round_trip(broker.bootstrap)
    assert not broker.is_running()
    assert _process_gone(pid) and _group_gone(pid)


def test_start_again_after_the_broker_died(memory_broker: LocalBroker) -> None:
    first_pid = memory_broker.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while memory_broker.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not memory_broker.is_running()
    memory_broker.start()
    assert memory_broker.pid not in (None, first_pid)
    _round_trip(memory_broker.bootstrap)


def test_durable_broker_survives_kill_9_and_restart(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "broker", free_port()
    topic, group, partitions = _name("durable"), _name("g"), 3
    values = [f"record-{i}".encode() for i in range(60)]

    first = LocalBroker(port=port, data_dir=data_dir).start()
    try:
        assert first.durable and first.s3_pid is not None
        with pytest.raises(BrokerError, match="in use by another running broker"):
            LocalBroker(data_dir=data_dir).start()
        _create_topic(first.bootstrap, topic, partitions)
        _produce(first.bootstrap, topic, values)
        assert sorted(_consume_in_group(first.bootstrap, topic, group, 60)) == sorted(values)
        committed = _committed(first.bootstrap, group)
        assert sum(committed.values()) == 60 and len(committed) == partitions
        tansu_pid, s3_pid = first.pid, first.s3_pid
        assert tansu_pid is not None
        os.kill(tansu_pid, signal.SIGKILL)
        os.kill(s3_pid, signal.SIGKILL)
    finally:
        first.stop()
    assert _process_gone(tansu_pid) and _process_gone(s3_pid)

    with LocalBroker(port=port, data_dir=data_dir) as second:
        assert second.bootstrap == first.bootstrap
        assert topic in _topics(second.bootstrap)
        assert sorted(_read_all(second.bootstrap, topic, partitions, 60)) == sorted(values)
        assert _committed(second.bootstrap, group) == committed
        assert _group_positions(second.bootstrap, topic, group) == committed
    assert (data_dir / "s3-credentials.json").exists()


def test_two_durable_brokers_and_a_memory_broker_side_by_side(tmp_path: Path) -> None:
    with LocalBroker(data_dir=tmp_path / "a") as a, LocalBroker(data_dir=tmp_path / "b") as b, \
            LocalBroker() as memory:
        brokers = (a, b, memory)
        assert len({broker.bootstrap for broker in brokers}) == 3
        for broker in brokers:
            _round_trip(broker.bootstrap)
        pids = [pid for broker in brokers for pid in (broker.pid, broker.s3_pid) if pid]
    assert len(pids) == 5
    assert all(_process_gone(pid) and _group_gone(pid) for pid in pids)


_CHILD_SCRIPT = textwrap.dedent("""
    import sys, time
    from pipeline.broker import LocalBroker
    data_dir = sys.argv[2] if len(sys.argv) > 2 else None
    broker = LocalBroker(log_path=sys.argv[1], data_dir=data_dir).start()
    s3_port = broker.s3_endpoint.rsplit(":", 1)[1] if broker.s3_endpoint else ""
    print(broker.pid, broker.s3_pid or "", s3_port, flush=True)
    time.sleep(120)
""")


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "durable"])
def test_children_die_when_the_python_parent_is_sigkilled(tmp_path: Path,
                                                          durable: bool) -> None:
    argv = [sys.executable, "-c", _CHILD_SCRIPT, str(tmp_path / "tansu.log")]
    if durable:
        argv.append(str(tmp_path / "data"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(REPO), os.environ.get("PYTHONPATH")]))}
    parent = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert parent.stdout is not None
        pids = [int(word) for word in parent.stdout.readline().split()]
        s3_port = pids.pop() if durable else None
        assert len(pids) == (2 if durable else 1), "the child script did not report its pids"
        assert not any(_process_gone(pid) for pid in pids)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    assert all(_wait_gone(pid) for pid in pids), f"orphans left running: {pids}"
    if s3_port is not None:  # weed leaves its S3 socket behind; stop() would remove it
        Path(f"/tmp/seaweedfs-s3-{s3_port}.sock").unlink(missing_ok=True)
