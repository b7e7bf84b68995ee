"""Fixtures: a real Kafka-protocol broker for the session, and factories for each test.

The broker engine is chosen per run: ``pytest --broker-engine tansu|kafka`` (default
``$CHAINWATCH_TEST_ENGINE``, else tansu), shown in the report header.

tansu   the local Tansu broker chainwatch starts itself (pipeline.broker.LocalBroker).
kafka   Apache Kafka: a testcontainers Kafka container when a Docker engine answers, else
        a single-node :class:`pipeline.broker.KafkaBroker` from the jars ``.ci/tools.sh``
        fetched into ``.ci/cache/kafka-4.1.1`` (or ``$CHAINWATCH_KAFKA_HOME``); tests never
        fetch them. Tests marked ``kafka_cluster`` get a three-node KafkaBroker from the
        ``kafka_cluster`` fixture and are skipped on tansu.

Factories give every test its own topics and consumer group, so tests never see each
other's records.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from pipeline import clients
from pipeline.broker.kafka_config import KAFKA_VERSION
from pipeline.broker.kafka_runtime import KAFKA_HOME_ENV
from pipeline.settings import Settings, env_var

# postgresql_url (session) and postgresql_db (per test): a real PostgreSQL server
pytest_plugins = ["tests.postgres"]


def _docker_available() -> bool:
    """Whether a Docker engine answers ``/_ping`` (without leaking the client's socket)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            conn: socket.socket = socket.socket(socket.AF_UNIX)
            try:
                conn.settimeout(2)
                conn.connect(host.removeprefix("unix://"))
            except OSError:
                conn.close()
                raise
        elif host.startswith("tcp://"):
            hostname, _, port = host.removeprefix("tcp://").rpartition(":")
            conn = socket.create_connection((hostname, int(port)), timeout=2)
        else:
            return False
        with conn:
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in conn.recv(1024)
    except OSError:
        return False


ENGINES = ("tansu", "kafka")
ENGINE_ENV = "CHAINWATCH_TEST_ENGINE"
REPO = Path(__file__).resolve().parents[1]
CI_KAFKA_HOME = REPO / ".ci" / "cache" / f"kafka-{KAFKA_VERSION}"  # .ci/tools.sh fills it


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--broker-engine", choices=ENGINES, default=None,
                     help=f"the broker the tests run against: tansu (Tansu, one node) or "
                          f"kafka (Apache Kafka {KAFKA_VERSION}); default ${ENGINE_ENV}, "
                          "else tansu")


def engine_of(config: pytest.Config) -> str:
    engine = config.getoption("--broker-engine") or os.environ.get(ENGINE_ENV) or "tansu"
    if engine not in ENGINES:
        raise pytest.UsageError(f"{ENGINE_ENV}={engine!r}: choose one of {', '.join(ENGINES)}")
    return str(engine)


def kafka_home_of() -> Path:
    """Where the tests' Kafka jars are: ``$CHAINWATCH_KAFKA_HOME``, else .ci/cache."""
    return Path(os.environ[KAFKA_HOME_ENV]) if os.environ.get(KAFKA_HOME_ENV) else CI_KAFKA_HOME


def pytest_report_header(config: pytest.Config) -> str:
    engine = engine_of(config)
    if engine == "tansu":
        return "broker engine: tansu (the local Tansu broker)"
    where = "a testcontainers Kafka container" if _docker_available() else (
        f"pipeline.broker.KafkaBroker, jars in {kafka_home_of()}")
    return f"broker engine: kafka (Apache Kafka {KAFKA_VERSION}: {where})"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kafka_cluster") and engine_of(item.config) != "kafka":
        pytest.skip("needs a three-node Apache Kafka cluster: runs with --broker-engine kafka "
                    f"(or {ENGINE_ENV}=kafka)")


@pytest.fixture(scope="session")
def broker_engine(pytestconfig: pytest.Config) -> str:
    """``tansu`` or ``kafka``: the engine this session's broker runs."""
    return engine_of(pytestconfig)


@pytest.fixture(scope="session")
def broker_kind(broker_engine: str) -> str:
    """``local-tansu``, ``local-kafka`` (KafkaBroker) or ``kafka-container``."""
    if broker_engine == "tansu":
        return "local-tansu"
    return "kafka-container" if _docker_available() else "local-kafka"


@pytest.fixture(scope="session")
def kafka_home() -> Path:
    """The cache holding Kafka's checked jars; fails, saying what to run, without them."""
    home = kafka_home_of()
    if not (home / "libs").is_dir():
        pytest.fail(f"Apache Kafka's jars are not in {home}: run `bash .ci/tools.sh`, which "
                    f"fetches them there once (or set {KAFKA_HOME_ENV} to a cache that has "
                    "them); tests never fetch them")
    return home


@pytest.fixture(scope="session")
def kafka_bootstrap(broker_kind: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """host:port of a real broker, up for the whole session."""
    if broker_kind == "kafka-container":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    if broker_kind == "local-kafka":
        from pipeline.broker import KafkaBroker

        with KafkaBroker(home=request.getfixturevalue("kafka_home")) as kafka:
            yield kafka.bootstrap
        return
    from pipeline.broker import LocalBroker

    with LocalBroker() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="module")
def kafka_cluster(broker_engine: str, kafka_home: Path) -> Iterator[Any]:
    """A three-node Apache Kafka cluster (pipeline.broker.KafkaBroker, nodes=3) for the
    module: replication factor 3 and min.insync.replicas 2 by default. Tests using it are
    marked ``kafka_cluster``; a test that kills or stops a node starts it again."""
    if broker_engine != "kafka":
        pytest.skip("needs a three-node Apache Kafka cluster: runs with --broker-engine kafka")
    from pipeline.broker import KafkaBroker

    with KafkaBroker(nodes=3, home=kafka_home) as cluster:
        yield cluster


CHAINWATCH = str(Path(sys.executable).with_name("chainwatch"))  # the installed console script


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment that points the ``chainwatch`` command at ``settings``."""
    env = dict(os.environ) | {env_var("bootstrap_servers"): settings.bootstrap_servers}
    for role, name in settings.topics.all().items():
        env[env_var(f"topics.{role}")] = name
    env[env_var("checkpoint_uri")] = settings.checkpoint_uri
    if "://" not in settings.checkpoint_uri:  # the key beside a local store, not in the repo
        env[env_var("checkpoint_key_file")] = settings.checkpoint_uri.rstrip("/") + ".key"
    env[env_var("consumer_group")] = settings.consumer_group
    env[env_var("transactions")] = settings.transactions
    return env


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings pointing at the session broker, with this test's own topic names, group and
    checkpoint directory."""
    names = {f"topics__{role}": unique(f"t-{role}") for role in Settings().topics.all()}
    return Settings.load(env={}).replace(
        bootstrap_servers=kafka_bootstrap, consumer_group=unique("g"),
        checkpoint_uri=str(tmp_path / "checkpoints"), **names)


@pytest.fixture
def topic_factory(settings: Settings) -> Callable[..., str]:
    """Create a fresh topic: ``topic_factory(partitions=4) -> name``."""
    admin = clients.admin(settings)

    def make(partitions: int = 1, name: str | None = None) -> str:
        topic = name or unique("topic")
        admin.create_topics([NewTopic(topic, partitions, 1)])
        return topic

    yield make  # type: ignore[misc]
    admin.close()


@pytest.fixture
def group_factory() -> Callable[[], str]:
    """A fresh consumer group id per call."""
    return lambda: unique("group")


@pytest.fixture
def producer_factory(settings: Settings) -> Iterator[Callable[..., KafkaProducer]]:
    made: list[KafkaProducer] = []

    def make(**overrides: Any) -> KafkaProducer:
        producer = clients.producer(settings, **overrides)
        made.append(producer)
        return producer

    yield make
    for p in made:
        p.close()


@pytest.fixture
def consumer_factory(settings: Settings,
                     group_factory: Callable[[], str]) -> Iterator[Callable[..., KafkaConsumer]]:
    """Consumers tuned for fast group joins (session 2 s, heartbeat 0.5 s)."""
    made: list[KafkaConsumer] = []

    def make(*topics: str, group_id: str | None = None, **overrides: Any) -> KafkaConsumer:
        consumer = clients.consumer(
            settings, *topics, group_id=group_id or group_factory(),
            **({"session_timeout_ms": 2000, "heartbeat_interval_ms": 500} | overrides))
        made.append(consumer)
        return consumer

    yield make
    for c in made:
        c.close()


def consume_all(consumer: KafkaConsumer, expected: int, timeout_s: float = 20.0) -> list[Any]:
    """Poll until ``expected`` messages have arrived or the timeout passes."""
    import time

    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        for messages in consumer.poll(timeout_ms=200).values():
            got.extend(messages)
    return got


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """(status, body) of a GET; error statuses too, and 0 when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""
