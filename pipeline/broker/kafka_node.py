"""One node of a :class:`~pipeline.broker.KafkaBroker`: a JVM running ``kafka.Kafka`` on a
fixed Kafka port and controller port, with its properties, data and log in one directory.

A node can be killed (SIGKILL), stopped (SIGTERM), started again on the same ports and data,
and paused and resumed (SIGSTOP, SIGCONT), which is what failure tests need.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.broker.kafka_config import (
    FORMAT_JVM_OPTIONS,
    JVM_OPTIONS,
    NodeLayout,
    node_properties,
    render_properties,
    voters,
)
from pipeline.broker.kafka_runtime import KafkaRuntime
from pipeline.broker.processes import Child, clean_env, kafka_metadata, port_is_free, wait_until
from pipeline.errors import BrokerError, PortInUse

_POLL_S = 0.1


def _all_threads_stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped (state T), as /proc says; True where there is no
    /proc to ask."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        return True
    try:
        states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                  for task in tasks.iterdir()]
    except OSError:  # a thread ended while we looked: look again
        return False
    return all(state in ("T", "t") for state in states)


class KafkaNode:
    """One node of a :class:`KafkaBroker`: a JVM running ``kafka.Kafka`` on fixed ports."""

    def __init__(self, layout: NodeLayout, directory: Path, host: str,
                 startup_timeout_s: float) -> None:
        self.layout = layout
        self.directory = directory
        self._host = host
        self._startup_timeout_s = startup_timeout_s
        self._runtime: KafkaRuntime | None = None
        self._pass_fds: tuple[int, ...] = ()
        self._child: Child | None = None
        self._paused = False
        self.archive_classes = False  # dump a class-data archive at exit if there is none
        self._archive_pending: tuple[Path, Path] | None = None  # (being written, final)
        self._lock = threading.RLock()

    @property
    def node_id(self) -> int:
        return self.layout.node_id

    @property
    def port(self) -> int:
        return self.layout.port

    @property
    def controller_port(self) -> int:
        return self.layout.controller_port

    @property
    def bootstrap(self) -> str:
        return f"{self._host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the node's JVM while it runs, else None."""
        with self._lock:
            return self._child.pid if self._child is not None and self._child.alive() else None

    @property
    def log_path(self) -> Path:
        return self.directory / "kafka.log"

    @property
    def properties_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log_dir(self) -> Path:
        return self.directory / "data"

    def is_running(self) -> bool:
        """True while the JVM is alive (paused included)."""
        with self._lock:
            return self._child is not None and self._child.alive()

    def formatted(self) -> bool:
        return (self.log_dir / "meta.properties").is_file()

    def configure(self, runtime: KafkaRuntime, cluster: Sequence[NodeLayout],
                  pass_fds: tuple[int, ...]) -> None:
        """Write ``server.properties``; what :meth:`start` runs with."""
        self._runtime, self._pass_fds = runtime, pass_fds
        self.directory.mkdir(parents=True, exist_ok=True)
        self.properties_path.write_text(
            render_properties(node_properties(self.layout, cluster, self._host, self.log_dir)),
            encoding="utf-8")

    def format_storage(self, cluster_id: str, cluster: Sequence[NodeLayout]) -> Child:
        """Start ``StorageTool format`` for this node (the caller waits for it)."""
        quorum = (["--standalone"] if len(cluster) == 1
                  else ["--initial-controllers", voters(cluster, self._host)])
        runtime = self._require_runtime()
        archive = runtime.class_archive  # the broker's classes include the tool's
        sharing = (f"-XX:SharedArchiveFile={archive}",) if archive.is_file() else ()
        argv = runtime.argv(
            FORMAT_JVM_OPTIONS + sharing, "kafka.tools.StorageTool", "format", "-t", cluster_id,
            "-c", str(self.properties_path), *quorum)
        return Child.spawn(f"kafka storage format of node {self.node_id}", argv, clean_env(),
                           self.directory / "format.log", pass_fds=self._pass_fds)

    def spawn(self) -> Child:
        """Start the JVM without waiting; see :meth:`start`."""
        with self._lock:
            if self.is_running():
                raise BrokerError(f"Kafka node {self.node_id} is already running")
            if not port_is_free(self._host, self.port) or not port_is_free(
                    self._host, self.controller_port):
                raise PortInUse(
                    f"port {self.port} or {self.controller_port} on {self._host} (Kafka node "
                    f"{self.node_id}) is already in use; stop what listens there, or choose "
                    "another --port / --data-dir")
            runtime = self._require_runtime()
            argv = runtime.argv(JVM_OPTIONS + self._archive_options(runtime), "kafka.Kafka",
                                str(self.properties_path))
            self._child = Child.spawn(f"Kafka node {self.node_id}", argv, clean_env(),
                                      self.log_path, pass_fds=self._pass_fds)
            self._paused = False
            return self._child

    @property
    def archiving(self) -> bool:
        """True while this node's JVM is to write the class-data archive when it exits."""
        return self._archive_pending is not None

    def _archive_options(self, runtime: KafkaRuntime) -> tuple[str, ...]:
        """Use the class-data archive (see KafkaRuntime.class_archive), or make it."""
        archive = runtime.class_archive
        if archive.is_file():
            return (f"-XX:SharedArchiveFile={archive}",)
        if not self.archive_classes:
            return ()
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_name(f"{archive.stem}.{os.getpid()}-{self.node_id}.partial")
        self._archive_pending = (partial, archive)
        return (f"-XX:ArchiveClassesAtExit={partial}",)

    def _exited(self) -> None:
        """After the JVM is gone: keep the archive it wrote at a clean exit, if any."""
        self._child = None
        self._paused = False
        if self._archive_pending is not None:
            partial, archive = self._archive_pending
            self._archive_pending = None
            with contextlib.suppress(OSError):
                if partial.is_file() and partial.stat().st_size > 0:
                    partial.replace(archive)
                partial.unlink(missing_ok=True)

    def ready(self) -> bool:
        """The node answers, and its metadata lists it as a registered, unfenced broker."""
        metadata = kafka_metadata(self._host, self.port)
        return metadata is not None and self.node_id in metadata.brokers

    def start(self) -> KafkaNode:
        """(Re)start the node on its ports and data; wait until it is a live broker again."""
        with self._lock:
            if self.is_running():
                return self
            child = self.spawn()
        deadline = time.monotonic() + self._startup_timeout_s
        wait_until(self.ready, child, deadline, f"Kafka node {self.node_id} on "
                   f"{self.bootstrap}", self._startup_timeout_s, poll_s=_POLL_S)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """A clean stop (SIGTERM: the node hands over its leaderships first), SIGKILL if it
        does not exit within ``timeout_s``."""
        with self._lock:
            if self._child is None:
                return
            if self._paused:
                self.resume()
            self._child.stop(timeout_s)
            self._exited()

    def kill(self) -> None:
        """SIGKILL the node, as a crash would; it stays down until :meth:`start`."""
        with self._lock:
            if self._child is None:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._child.pid, signal.SIGKILL)
            self._child.process.wait()
            self._exited()

    def pause(self) -> None:
        """SIGSTOP the node: alive but silent, as a long GC pause or a hung host. Returns once
        every thread of the JVM has stopped (the signal is delivered asynchronously)."""
        pid = self._signal(signal.SIGSTOP)
        self._paused = True
        deadline = time.monotonic() + 5.0
        while not _all_threads_stopped(pid) and time.monotonic() < deadline:
            time.sleep(0.005)

    def resume(self) -> None:
        """SIGCONT a paused node."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def _signal(self, sig: signal.Signals) -> int:
        with self._lock:
            if self._child is None or not self._child.alive():
                raise BrokerError(f"Kafka node {self.node_id} is not running; start() it first")
            os.killpg(self._child.pid, sig)
            return self._child.pid

    def _require_runtime(self) -> KafkaRuntime:
        if self._runtime is None:
            raise BrokerError(f"Kafka node {self.node_id} is not configured; start the "
                              "KafkaBroker it belongs to")
        return self._runtime

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"KafkaNode(node_id={self.node_id}, port={self.port}, {state})"
