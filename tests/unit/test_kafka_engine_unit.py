"""Unit tests of the Kafka engine's pieces: its configuration (pipeline.broker.kafka_config),
the jar cache, lock file, Java and Maven checks (kafka_runtime), the Metadata probe and the
KafkaBroker's argument checks. No JVM runs here; Java and Maven are small shell scripts.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.broker import KafkaBroker, kafka_runtime
from pipeline.broker.kafka_config import (
    BROKER,
    KAFKA_VERSION,
    LOCAL,
    NodeLayout,
    compose_env_name,
    kafka_uuid,
    node_properties,
    render_properties,
    replication,
    voters,
)
from pipeline.broker.kafka_runtime import (
    LOCK_FILE,
    POM,
    default_home,
    fetch,
    find_java,
    prepare,
    read_lock,
    verify_jars,
)
from pipeline.broker.processes import kafka_metadata
from pipeline.errors import BrokerBinaryNotFound, BrokerError, ChecksumMismatch, ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def _one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message
    return message


# --- configuration -------------------------------------------------------------------------


def _cluster(size: int) -> list[NodeLayout]:
    return [NodeLayout(i, 9092 + i, 19092 + i, kafka_uuid()) for i in range(1, size + 1)]


def test_replication_follows_the_cluster_size() -> None:
    assert replication(1) == {
        "default.replication.factor": "1", "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "min.insync.replicas": "1", "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.min.isr": "1"}
    three = replication(3)
    assert {three[k] for k in three if "factor" in k} == {"3"}
    assert {three[k] for k in three if "isr" in k or "insync" in k} == {"2"}
    assert replication(5)["default.replication.factor"] == "3"
    with pytest.raises(ValueError):
        replication(0)


def test_node_properties_of_a_three_node_cluster(tmp_path: Path) -> None:
    cluster = _cluster(3)
    props = node_properties(cluster[1], cluster, "127.0.0.1", tmp_path / "data")
    assert props["node.id"] == "2"
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:19094"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9094"
    assert props["controller.quorum.bootstrap.servers"] == (
        "127.0.0.1:19093,127.0.0.1:19094,127.0.0.1:19095")
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["offsets.topic.num.partitions"] == "4"
    assert "controller.quorum.voters" not in props  # a dynamic quorum, formatted with its voters
    assert set(BROKER) | set(LOCAL) <= set(props)
    assert voters(cluster, "127.0.0.1") == ",".join(
        f"{n.node_id}@127.0.0.1:{n.controller_port}:{n.directory_id}" for n in cluster)


def test_render_properties_escapes_what_java_would_misread() -> None:
    text = render_properties({"log.dirs": "C:\\data\\ kafka", "a": " leading", "b": "ä€😀"})
    lines = text.splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == ["a=\\ leading", "b=\\u00e4\\u20ac\\ud83d\\ude00",
                         "log.dirs=C:\\\\data\\\\ kafka"]
    assert text.isascii()


def test_kafka_uuid_is_kafkas_shape() -> None:
    ids = {kafka_uuid() for _ in range(200)}
    assert len(ids) == 200
    for value in ids:
        assert len(value) == 22 and not value.startswith("-")
        assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789-_")


def test_compose_env_names_follow_the_apache_kafka_image() -> None:
    assert compose_env_name("offsets.topic.num.partitions") == (
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS")
    assert compose_env_name("a_b.c-d") == "KAFKA_A__B_C___D"


# --- what ships with the package -------------------------------------------------------------


def test_pom_pins_kafka_and_the_log4j2_binding() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(POM).getroot()
    props = {p.tag.split("}")[1]: p.text for p in root.find("m:properties", ns) or []}
    deps = {(d.findtext("m:groupId", namespaces=ns), d.findtext("m:artifactId", namespaces=ns)):
            d.findtext("m:version", namespaces=ns) for d in root.iterfind(
                "m:dependencies/m:dependency", ns)}
    assert props["kafka.version"] == KAFKA_VERSION
    assert props["log4j.version"] == "2.24.3"
    assert deps == {("org.apache.kafka", "kafka_2.13"): "${kafka.version}",
                    ("org.apache.logging.log4j", "log4j-slf4j-impl"): "${log4j.version}"}


def test_lock_file_lists_the_broker_and_its_logging() -> None:
    locked = read_lock()
    assert f"kafka_2.13-{KAFKA_VERSION}.jar" in locked
    assert f"kafka-clients-{KAFKA_VERSION}.jar" in locked
    assert {"log4j-slf4j-impl-2.24.3.jar", "log4j-core-2.24.3.jar", "slf4j-api-1.7.36.jar"} <= \
        set(locked)
    assert all(len(digest) == 64 for digest in locked.values())


def test_the_runtime_files_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = config["tool"]["setuptools"]["package-data"]["pipeline.broker"]
    for path in (POM, LOCK_FILE, kafka_runtime.LOG4J_CONFIG):
        assert path.is_file()
        assert f"kafka-runtime/{path.name}" in shipped


# --- the cache directory and the lock ----------------------------------------------------------


def test_default_home(tmp_path: Path) -> None:
    assert default_home({"CHAINWATCH_KAFKA_HOME": str(tmp_path / "k")}) == tmp_path / "k"
    assert default_home({"XDG_CACHE_HOME": str(tmp_path), "HOME": "/nowhere"}) == (
        tmp_path / "chainwatch" / f"kafka-{KAFKA_VERSION}")
    assert default_home({"HOME": str(tmp_path)}) == (
        tmp_path / ".cache" / "chainwatch" / f"kafka-{KAFKA_VERSION}")


@pytest.fixture
def fake_libs(tmp_path: Path) -> tuple[Path, Path]:
    """A libs directory of two small jars and a lock file that locks them."""
    libs = tmp_path / "home" / "libs"
    libs.mkdir(parents=True)
    lines = ["# a comment"]
    for name, content in (("a-1.0.jar", b"first"), ("b-2.0.jar", b"second")):
        (libs / name).write_bytes(content)
        lines.append(f"{hashlib.sha256(content).hexdigest()}  {name}")
    lock = tmp_path / "jars.sha256"
    lock.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return libs, lock


def test_verify_jars_accepts_exactly_the_locked_jars(fake_libs: tuple[Path, Path]) -> None:
    libs, lock = fake_libs
    assert verify_jars(libs, lock) == [libs / "a-1.0.jar", libs / "b-2.0.jar"]


def test_a_changed_jar_is_a_one_line_checksum_mismatch(fake_libs: tuple[Path, Path]) -> None:
    libs, lock = fake_libs
    (libs / "b-2.0.jar").write_bytes(b"second, changed")
    with pytest.raises(ChecksumMismatch) as info:
        verify_jars(libs, lock)
    message = _one_line(info.value)
    assert message.startswith(f"checksum mismatch: {libs / 'b-2.0.jar'} has SHA-256 ")
    assert "--fetch" in message


def test_an_unlisted_jar_is_refused(fake_libs: tuple[Path, Path]) -> None:
    libs, lock = fake_libs
    (libs / "evil-1.0.jar").write_bytes(b"x")
    with pytest.raises(ChecksumMismatch, match=r"evil-1\.0\.jar, which jars\.sha256 does not list"):
        verify_jars(libs, lock)


def test_a_missing_jar_or_directory_says_to_fetch(fake_libs: tuple[Path, Path]) -> None:
    libs, lock = fake_libs
    (libs / "a-1.0.jar").unlink()
    with pytest.raises(BrokerBinaryNotFound, match=r"lacks 1 of .*a-1.0.jar.*--fetch"):
        verify_jars(libs, lock)
    with pytest.raises(BrokerBinaryNotFound, match="are not in"):
        verify_jars(libs.parent / "nothing", lock)


def test_a_damaged_lock_file_is_one_line(tmp_path: Path, fake_libs: tuple[Path, Path]) -> None:
    libs, _ = fake_libs
    lock = tmp_path / "bad.sha256"
    lock.write_text("not a hash  a-1.0.jar\n", encoding="utf-8")
    with pytest.raises(BrokerError, match=r"bad.sha256:1 is not"):
        verify_jars(libs, lock)


# --- Java ------------------------------------------------------------------------------------


def test_no_java_on_path_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BrokerBinaryNotFound) as info:
        find_java({"PATH": str(tmp_path)})
    assert "needs Java 17 or newer and there is no `java` on PATH" in _one_line(info.value)


def test_java_home_without_java_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BrokerBinaryNotFound, match="has no bin/java"):
        find_java({"JAVA_HOME": str(tmp_path), "PATH": ""})


@pytest.mark.parametrize(("printed", "major"), [('openjdk version "11.0.2" 2019-01-15', 11),
                                                 ('java version "1.8.0_401"', 8)])
def test_an_old_java_is_refused(tmp_path: Path, printed: str, major: int) -> None:
    _script(tmp_path / "java", f"echo '{printed}' >&2")
    with pytest.raises(BrokerBinaryNotFound) as info:
        find_java({"PATH": str(tmp_path)})
    assert f"is Java {major}; Kafka {KAFKA_VERSION} needs Java 17 or newer" in _one_line(
        info.value)


def test_java_17_and_newer_are_taken(tmp_path: Path) -> None:
    for version in ("17.0.15", "25"):
        folder = tmp_path / version / "bin"
        folder.mkdir(parents=True)
        java = _script(folder / "java", f"echo 'openjdk version \"{version}\"' >&2")
        assert find_java({"PATH": str(folder)}) == str(java)
        assert find_java({"JAVA_HOME": str(folder.parent), "PATH": ""}) == str(java)


# --- fetching --------------------------------------------------------------------------------


@pytest.fixture
def java_17(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "java", "echo 'openjdk version \"17.0.1\"' >&2")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    return bin_dir


def test_no_jars_and_no_maven_is_one_line_before_anything(java_17: Path,
                                                          tmp_path: Path) -> None:
    home = tmp_path / "cache"
    with pytest.raises(BrokerBinaryNotFound) as info:
        prepare(home)
    message = _one_line(info.value)
    assert "jars are not in" in message and "Maven (mvn) is not on PATH" in message
    assert not home.exists()


def test_a_failing_maven_is_one_line(java_17: Path, tmp_path: Path) -> None:
    maven = _script(java_17 / "mvn", "echo '[ERROR] Could not resolve dependencies'; exit 1")
    with pytest.raises(BrokerError) as info:
        fetch(tmp_path / "cache", str(maven))
    message = _one_line(info.value)
    assert "Maven failed to fetch Kafka's jars (exit 1): [ERROR] Could not resolve" in message
    assert not (tmp_path / "cache" / "libs").exists()


@pytest.fixture
def tiny_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The lock file locks one jar, ``only-1.jar`` holding b"only"; returns a folder with it."""
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "only-1.jar").write_bytes(b"only")
    lock = tmp_path / "jars.sha256"
    lock.write_text(f"{hashlib.sha256(b'only').hexdigest()}  only-1.jar\n", encoding="utf-8")
    monkeypatch.setattr(kafka_runtime, "LOCK_FILE", lock)
    return jars


def _maven_copying(bin_dir: Path, source: Path, log: Path) -> Path:
    """A fake mvn that logs its arguments and copies ``source``'s jars to -DoutputDirectory."""
    return _script(bin_dir / "mvn", f'echo "$@" > {log}; for a; do case "$a" in '
                                    f'-DoutputDirectory=*) /bin/cp {source}/*.jar '
                                    '"${a#-DoutputDirectory=}";; esac; done')


def test_fetch_runs_maven_with_strict_checksums_into_the_cache(
        java_17: Path, tmp_path: Path, tiny_lock: Path) -> None:
    args = tmp_path / "args"
    maven = _maven_copying(java_17, tiny_lock, args)
    home = tmp_path / "cache"
    assert fetch(home, str(maven)) is True
    assert [p.name for p in (home / "libs").iterdir()] == ["only-1.jar"]
    argv = args.read_text().split()
    assert argv[:3] == ["-q", "-B", "-C"]
    assert f"-Dmaven.repo.local={home / 'm2'}" in argv
    assert "dependency:copy-dependencies" in argv
    args.unlink()
    assert fetch(home, str(maven)) is False  # already there and checked: Maven not run
    assert not args.exists()
    runtime = prepare(home, fetch_missing=False)
    assert runtime.classpath == str(home / "libs" / "only-1.jar")
    assert runtime.class_archive.parent == home / "cds"


def test_fetched_jars_that_differ_from_the_lock_never_reach_libs(
        java_17: Path, tmp_path: Path, tiny_lock: Path) -> None:
    (tiny_lock / "only-1.jar").write_bytes(b"tampered")
    maven = _maven_copying(java_17, tiny_lock, tmp_path / "args")
    home = tmp_path / "cache"
    with pytest.raises(ChecksumMismatch) as info:
        fetch(home, str(maven))
    assert "only-1.jar has SHA-256" in _one_line(info.value)
    assert not (home / "libs").exists()
    assert not list(home.glob("libs.*"))  # the staging directory is gone too


def test_prepare_fetches_missing_jars_with_maven(java_17: Path, tmp_path: Path,
                                                 tiny_lock: Path) -> None:
    _maven_copying(java_17, tiny_lock, tmp_path / "args")
    runtime = prepare(tmp_path / "cache")
    assert runtime.classpath == str(tmp_path / "cache" / "libs" / "only-1.jar")


# --- the Metadata probe ------------------------------------------------------------------------


def _string(text: str) -> bytes:
    return struct.pack(">h", len(text)) + text.encode()


@pytest.fixture
def metadata_server() -> Iterator[int]:
    """Answers one Metadata v4 request: brokers 1 and 3, topic t with partitions 0 (leader 3)
    and 1 (no leader)."""
    body = struct.pack(">i", 0) + struct.pack(">i", 2)
    for node in (1, 3):
        body += struct.pack(">i", node) + _string("127.0.0.1") + struct.pack(">ih", 9000, -1)
    body += _string("cluster") + struct.pack(">i", 1) + struct.pack(">i", 1)
    body += struct.pack(">h", 0) + _string("t") + b"\x00" + struct.pack(">i", 2)
    for partition, leader in ((0, 3), (1, -1)):
        body += struct.pack(">hii", 0, partition, leader)
        body += struct.pack(">iii", 1, 3, 0)  # replicas [3], in-sync replicas []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    seen: list[bytes] = []

    def answer() -> None:
        connection, _ = server.accept()
        with connection:
            size = struct.unpack(">i", connection.recv(4))[0]
            request = b""
            while len(request) < size:
                request += connection.recv(size - len(request))
            seen.append(request)
            correlation = request[4:8]
            connection.sendall(struct.pack(">i", len(body) + 4) + correlation + body)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    thread.join(5)
    server.close()
    assert seen and struct.unpack(">hh", seen[0][:4]) == (3, 4)  # Metadata, version 4


def test_kafka_metadata_reads_brokers_and_leaders(metadata_server: int) -> None:
    metadata = kafka_metadata("127.0.0.1", metadata_server, ("t",))
    assert metadata is not None
    assert metadata.brokers == {1, 3}
    assert metadata.leaders == {("t", 0): 3, ("t", 1): None}


def test_kafka_metadata_is_none_when_nothing_answers() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    assert kafka_metadata("127.0.0.1", port) is None


# --- KafkaBroker's arguments -------------------------------------------------------------------


def test_kafka_broker_checks_its_arguments() -> None:
    with pytest.raises(ConfigError, match="nodes must be 1 to 9"):
        KafkaBroker(nodes=0)
    with pytest.raises(ConfigError, match="--port"):
        KafkaBroker(nodes=3, port=65534)
    with pytest.raises(ConfigError):
        KafkaBroker(startup_timeout_s=0)
    broker = KafkaBroker(nodes=3, port=9092, data_dir="/srv/kafka")
    assert broker.bootstrap == "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
    assert repr(broker) == ("KafkaBroker(bootstrap='127.0.0.1:9092,127.0.0.1:9093,"
                            "127.0.0.1:9094', storage='durable', data_dir='/srv/kafka')")
    assert broker.nodes == () and not broker.is_running() and broker.pid is None
    broker.stop()  # before start: nothing to do


def test_kafka_broker_start_without_java_starts_nothing(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(BrokerBinaryNotFound, match="Java 17"):
        KafkaBroker(data_dir=tmp_path / "data", home=tmp_path / "home").start()
    assert not (tmp_path / "data").exists() and not (tmp_path / "home").exists()
