"""The :class:`KafkaBroker`: Apache Kafka (KRaft) on loopback ports, one node or a cluster.

Each node is one JVM, broker and controller at once, and a voter of the KRaft quorum: one
node is formatted ``--standalone``, a cluster with ``--initial-controllers`` naming every
node. A node listens on two loopback ports: its Kafka port (clients, and the other brokers)
and its controller port (the quorum). The properties come from :mod:`kafka_config`; the JVM
and the jars from :mod:`kafka_runtime`.

Storage
    temporary (default)  Under a temporary directory, removed on :meth:`KafkaBroker.stop`.
    durable              Pass ``data_dir``: ``data_dir/node-N/`` holds each node's
                         ``server.properties``, its log directory ``data/`` and its
                         ``kafka.log``; ``data_dir/cluster.json`` the cluster id and every
                         node's ports, so a new KafkaBroker on the same ``data_dir`` restarts
                         the same cluster (clients reconnect to the same ports, the quorum
                         finds its voters). Topics, records and committed offsets survive.
                         One broker at a time per ``data_dir`` (``data_dir/.lock``).

Ports
    Free ones by default. ``port=P`` puts node N's Kafka port at ``P + N - 1``. A durable
    cluster reuses the ports it was made with unless ``port`` says otherwise.

Start-up
    The first start with a new Java or new jars writes a class-data-sharing archive into the
    jar cache (``cds/``) as node 1 exits; later JVMs load Kafka's classes from it, with
    about a third less CPU (see :attr:`KafkaRuntime.class_archive`).

No orphans
    As for :class:`~pipeline.broker.LocalBroker`: every JVM is a :class:`~processes.Child`
    (its own process group, SIGTERM when the parent dies), and a started broker is stopped
    by an ``atexit`` hook.

Failure tests
    ``broker.nodes`` gives each :class:`KafkaNode`: ``kill()`` (SIGKILL), ``stop()``
    (SIGTERM: a controlled shutdown), ``start()`` (the same ports and data), ``pause()`` and
    ``resume()`` (SIGSTOP, SIGCONT); ``broker.leader_of(topic, partition)`` names the node
    leading a partition.

Example::

    with KafkaBroker(nodes=3) as cluster:
        producer = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all")
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from pipeline.broker.kafka_config import KAFKA_VERSION, NodeLayout, kafka_uuid
from pipeline.broker.kafka_node import KafkaNode
from pipeline.broker.kafka_runtime import prepare
from pipeline.broker.processes import kafka_metadata, port_is_free, wait_until
from pipeline.broker.s3 import lock_data_dir
from pipeline.errors import BrokerError, ConfigError, PortInUse

logger = logging.getLogger(__name__)

CLUSTER_FILE = "cluster.json"
_LAYOUT_VERSION = 1
_FORMAT_TIMEOUT_S = 120.0
_POLL_S = 0.1
MAX_NODES = 9


class KafkaBroker:
    """Apache Kafka on loopback ports: ``nodes`` combined broker-controller nodes, storing in
    a temporary directory or durably in ``data_dir``; see the module docstring.

    >>> KafkaBroker(nodes=3, port=9092)
    KafkaBroker(bootstrap='127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094', storage='temporary')
    """

    def __init__(self, nodes: int = 1, port: int | None = None,
                 data_dir: str | os.PathLike[str] | None = None, *, host: str = "127.0.0.1",
                 startup_timeout_s: float = 90.0, home: str | os.PathLike[str] | None = None
                 ) -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise ConfigError(f"nodes must be 1 to {MAX_NODES}, not {nodes}; use --nodes 1 "
                              "or --nodes 3")
        if port is not None and not 0 < port <= 65536 - nodes:
            raise ConfigError(f"port {port} is out of range for {nodes} node(s); choose one "
                              f"in 1-{65536 - nodes} with --port or omit --port")
        if startup_timeout_s <= 0:
            raise ConfigError(f"startup_timeout_s must be positive, got {startup_timeout_s}")
        self._size = nodes
        self._port = port
        self._host = host
        self._data_dir = Path(data_dir).absolute() if data_dir is not None else None
        self._startup_timeout_s = startup_timeout_s
        self._home = Path(home).absolute() if home is not None else None
        self._nodes: tuple[KafkaNode, ...] = ()
        self._temp_dir: Path | None = None
        self._dir_lock: int | None = None
        self._cluster_id: str | None = None
        self._last_ports: list[int] = []  # the ports of the last start, for repr after stop
        self._lock = threading.RLock()

    # --- what tests and clients read ---------------------------------------------------------

    @property
    def node_count(self) -> int:
        return self._size

    @property
    def nodes(self) -> tuple[KafkaNode, ...]:
        """The nodes, by node id (1, 2, …); empty before the first start."""
        return self._nodes

    def node(self, node_id: int) -> KafkaNode:
        for node in self._nodes:
            if node.node_id == node_id:
                return node
        raise BrokerError(f"no Kafka node {node_id} in {self!r}")

    @property
    def bootstrap(self) -> str:
        """``host:port`` of every node, comma-joined, for ``bootstrap_servers``."""
        return ",".join(f"{self._host}:{port}" for port in self._ports())

    @property
    def port(self) -> int:
        """Node 1's Kafka port (a free one is picked at the first start when not given)."""
        return self._ports()[0]

    @property
    def durable(self) -> bool:
        return self._data_dir is not None

    @property
    def data_dir(self) -> Path | None:
        return self._data_dir

    @property
    def cluster_id(self) -> str | None:
        return self._cluster_id

    @property
    def pid(self) -> int | None:
        """Process id of the first running node's JVM, None when none runs."""
        return next((node.pid for node in self._nodes if node.pid is not None), None)

    @property
    def log_path(self) -> Path | None:
        """Node 1's log file once started."""
        return self._nodes[0].log_path if self._nodes else None

    @property
    def log_paths(self) -> list[Path]:
        return [node.log_path for node in self._nodes]

    def is_running(self) -> bool:
        """True while every node runs."""
        with self._lock:
            return bool(self._nodes) and all(node.is_running() for node in self._nodes)

    def leader_of(self, topic: str, partition: int) -> int | None:
        """The node id leading ``topic``'s ``partition`` as the running nodes' metadata says
        (None while it has no leader); BrokerError if no node answers or knows it."""
        for node in self._nodes:
            if not node.is_running():
                continue
            metadata = kafka_metadata(self._host, node.port, (topic,))
            if metadata is not None and (topic, partition) in metadata.leaders:
                return metadata.leaders[(topic, partition)]
        raise BrokerError(f"no running Kafka node knows {topic}[{partition}]; create the topic "
                          "first, and start the broker")

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> KafkaBroker:
        """Start every node that is not running and wait until the cluster is whole: each node
        answers and lists all ``nodes`` brokers. Java, the jars and the ports are checked
        before any process starts."""
        with self._lock:
            if self.is_running():
                return self
            if any(node.is_running() for node in self._nodes):
                self._restart_stopped_nodes()
                return self
            self.stop()
            started = time.monotonic()
            runtime = prepare(self._home)
            try:
                root = self._claim_root()
                layout = self._layout(root)
                self._nodes = tuple(
                    KafkaNode(one, root / f"node-{one.node_id}", self._host,
                              self._startup_timeout_s) for one in layout)
                self._last_ports = [one.port for one in layout]
                fds = (self._dir_lock,) if self._dir_lock is not None else ()
                for node in self._nodes:
                    node.configure(runtime, layout, fds)
                self._nodes[0].archive_classes = True
                self._format(layout)
                children = [node.spawn() for node in self._nodes]
                deadline = started + self._startup_timeout_s
                wait_until(self._whole, children, deadline, self._what(),
                           self._startup_timeout_s, poll_s=_POLL_S)
            except BaseException:
                self.stop()
                raise
            atexit.register(self.stop)
            logger.info("started %r in %.2f s (logs: %s)", self, time.monotonic() - started,
                        ", ".join(str(path) for path in self.log_paths))
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every node (durable: cleanly, SIGTERM, so nothing needs recovery on the next
        start; temporary: SIGKILL, the data goes anyway, except for a node writing the
        class-data archive, which exits cleanly first); safe to call twice."""
        with self._lock:
            was_started = any(node.is_running() for node in self._nodes)
            if self.durable:
                threads = [threading.Thread(target=node.stop, args=(timeout_s,))
                           for node in self._nodes]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            else:  # but a node writing the class-data archive exits cleanly, first
                for node in sorted(self._nodes, key=lambda node: not node.archiving):
                    if node.archiving:
                        node.stop(timeout_s)
                    else:
                        node.kill()
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None
                self._nodes = ()
            if self._dir_lock is not None:
                os.close(self._dir_lock)
                self._dir_lock = None
            atexit.unregister(self.stop)
            if was_started:
                logger.info("stopped %r", self)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        if self._data_dir is None:
            return f"KafkaBroker(bootstrap={self.bootstrap!r}, storage='temporary')"
        return (f"KafkaBroker(bootstrap={self.bootstrap!r}, storage='durable', "
                f"data_dir={str(self._data_dir)!r})")

    # --- internals -------------------------------------------------------------------------

    def _what(self) -> str:
        return (f"Kafka {KAFKA_VERSION} on {self.bootstrap}" if self._size == 1
                else f"the {self._size}-node Kafka {KAFKA_VERSION} cluster on {self.bootstrap}")

    def _ports(self) -> list[int]:
        if self._nodes:
            return [node.port for node in self._nodes]
        if self._last_ports:
            return self._last_ports
        if self._port is not None:
            return [self._port + i for i in range(self._size)]
        return [0] * self._size

    def _whole(self) -> bool:
        for node in self._nodes:
            metadata = kafka_metadata(self._host, node.port)
            if metadata is None or len(metadata.brokers) < self._size:
                return False
        return True

    def _restart_stopped_nodes(self) -> None:
        for node in self._nodes:
            if not node.is_running():
                node.start()

    def _claim_root(self) -> Path:
        if self._data_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="chainwatch-kafka-"))
            return self._temp_dir
        self._dir_lock = lock_data_dir(self._data_dir)
        return self._data_dir

    def _layout(self, root: Path) -> list[NodeLayout]:
        """The saved layout of a durable cluster (with ``port`` applied), else a new one."""
        saved = self._load_layout(root) if self._data_dir is not None else None
        if saved is not None:
            if self._port is not None:
                saved = [NodeLayout(n.node_id, self._port + i, n.controller_port,
                                    n.directory_id) for i, n in enumerate(saved)]
            return saved
        ports = self._free_ports()
        layout = [NodeLayout(i + 1, kafka, controller, kafka_uuid())
                  for i, (kafka, controller) in enumerate(ports)]
        self._cluster_id = kafka_uuid()
        if self._data_dir is not None:
            self._save_layout(root, layout)
        return layout

    def _free_ports(self) -> list[tuple[int, int]]:
        """(Kafka, controller) ports per node: the asked-for Kafka ports, else free ones."""
        with contextlib.ExitStack() as held:  # hold each socket so no port is handed out twice
            def bind(port: int = 0) -> int:
                sock = held.enter_context(socket.socket())
                sock.bind((self._host, port))
                return int(sock.getsockname()[1])

            if self._port is not None:
                for port in self._ports():
                    if not port_is_free(self._host, port):
                        raise PortInUse(
                            f"port {port} on {self._host} is already in use; choose another "
                            "with --port or omit --port to pick free ones")
                kafka_ports = self._ports()
            else:
                kafka_ports = [bind() for _ in range(self._size)]
            controller_ports: list[int] = []
            while len(controller_ports) < self._size:
                candidate = bind()
                if candidate not in kafka_ports:
                    controller_ports.append(candidate)
        return list(zip(kafka_ports, controller_ports, strict=True))

    def _load_layout(self, root: Path) -> list[NodeLayout] | None:
        path = root / CLUSTER_FILE
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BrokerError(f"{path} is unreadable ({exc}); restore it, or use an empty "
                              "--data-dir for a new cluster") from exc
        if not isinstance(saved, dict) or saved.get("version") != _LAYOUT_VERSION:
            raise BrokerError(f"{path} is not a version-{_LAYOUT_VERSION} Kafka cluster file; "
                              "use the chainwatch that made it, or an empty --data-dir")
        try:
            layout = [NodeLayout(int(n["node_id"]), int(n["port"]), int(n["controller_port"]),
                                 str(n["directory_id"])) for n in saved["nodes"]]
            self._cluster_id = str(saved["cluster_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BrokerError(f"{path} is damaged ({exc!r}); restore it, or use an empty "
                              "--data-dir for a new cluster") from exc
        if len(layout) != self._size:
            raise ConfigError(f"{root} holds a {len(layout)}-node Kafka cluster, not "
                              f"{self._size}; pass --nodes {len(layout)} or another --data-dir")
        return layout

    def _save_layout(self, root: Path, layout: list[NodeLayout]) -> None:
        document = {"version": _LAYOUT_VERSION, "kafka_version": KAFKA_VERSION,
                    "cluster_id": self._cluster_id,
                    "nodes": [{"node_id": n.node_id, "port": n.port,
                               "controller_port": n.controller_port,
                               "directory_id": n.directory_id} for n in layout]}
        temporary = root / f".{CLUSTER_FILE}.tmp"
        temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        temporary.replace(root / CLUSTER_FILE)

    def _format(self, layout: list[NodeLayout]) -> None:
        """Format, in parallel, every node whose log directory is not formatted yet."""
        assert self._cluster_id is not None
        started = time.monotonic()
        pending = [(node, node.format_storage(self._cluster_id, layout))
                   for node in self._nodes if not node.formatted()]
        deadline = time.monotonic() + _FORMAT_TIMEOUT_S
        for node, child in pending:
            try:
                child.process.wait(max(deadline - time.monotonic(), 0.1))
            except Exception:
                child.stop(1.0)
                raise BrokerError(f"formatting Kafka node {node.node_id}'s storage took over "
                                  f"{_FORMAT_TIMEOUT_S:g} s; see {child.log_path}") from None
            if child.process.returncode != 0:
                raise BrokerError(f"formatting Kafka node {node.node_id}'s storage failed "
                                  f"(exit {child.process.returncode}): {child.log_tail()}")
        if pending:
            logger.debug("formatted %d node(s) in %.2f s", len(pending),
                         time.monotonic() - started)
