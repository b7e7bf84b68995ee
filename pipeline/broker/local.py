"""The :class:`LocalBroker`: Tansu on a loopback port, memory-backed or durable in a directory.

A started broker registers its :meth:`~LocalBroker.stop` with :mod:`atexit` (and a stopped one
unregisters it), so every broker still running when Python exits is stopped.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from pipeline.broker.binaries import find_tansu_binary
from pipeline.broker.processes import (
    Child,
    clean_env,
    free_port,
    kafka_answers,
    port_is_free,
    wait_until,
)
from pipeline.broker.s3 import S3_BUCKET, S3Server, lock_data_dir
from pipeline.errors import ConfigError, PortInUse

logger = logging.getLogger(__name__)


class LocalBroker:
    """A Tansu broker on ``host:port``, memory-backed, or durable in ``data_dir``.

    >>> LocalBroker(port=9092)
    LocalBroker(bootstrap='127.0.0.1:9092', storage='memory')
    """

    def __init__(self, port: int | None = None, data_dir: str | os.PathLike[str] | None = None,
                 host: str = "127.0.0.1", startup_timeout_s: float = 20.0,
                 log_path: str | os.PathLike[str] | None = None) -> None:
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"port {port} is out of range; choose one in 1-65535 with --port "
                              "or omit --port to pick a free one")
        if startup_timeout_s <= 0:
            raise ConfigError(f"startup_timeout_s must be positive, got {startup_timeout_s}")
        self._host = host
        self._port_given = port is not None
        self._port = port if port is not None else free_port(host)
        self._data_dir = Path(data_dir).absolute() if data_dir is not None else None
        self._startup_timeout_s = startup_timeout_s
        self._log_path = Path(log_path) if log_path is not None else None
        self._tansu: Child | None = None
        self._s3: S3Server | None = None
        self._temp_dir: Path | None = None
        self._dir_lock: int | None = None  # fd locking data_dir while this broker runs
        self._lock = threading.RLock()

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients' ``bootstrap_servers``."""
        return f"{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def durable(self) -> bool:
        """True when data lives in ``data_dir`` (through the local S3 server)."""
        return self._data_dir is not None

    @property
    def data_dir(self) -> Path | None:
        return self._data_dir

    @property
    def pid(self) -> int | None:
        """Process id of Tansu, None when not started."""
        return self._tansu.pid if self._tansu is not None else None

    @property
    def s3_pid(self) -> int | None:
        """Process id of the S3 server (durable brokers only), None when not started."""
        return self._s3.pid if self._s3 is not None else None

    @property
    def s3_endpoint(self) -> str | None:
        """``http://127.0.0.1:PORT`` of the S3 server while a durable broker runs."""
        return self._s3.endpoint if self._s3 is not None else None

    @property
    def log_path(self) -> Path | None:
        """Tansu's log file while started."""
        return self._tansu.log_path if self._tansu is not None else None

    def is_running(self) -> bool:
        """True while Tansu (and the S3 server, when durable) are alive."""
        with self._lock:
            return (self._tansu is not None and self._tansu.alive()
                    and (self._s3 is None or self._s3.alive()))

    def start(self) -> LocalBroker:
        """Start the broker and wait until it answers Kafka requests; no-op if running."""
        with self._lock:
            if self.is_running():
                return self
            self.stop()  # whatever is left of a broker that died on its own
            self._claim_port()
            tansu = find_tansu_binary()
            started = time.monotonic()
            deadline = started + self._startup_timeout_s
            try:
                env = clean_env()
                storage = "memory://tansu/"
                if self._data_dir is not None:
                    self._dir_lock = lock_data_dir(self._data_dir)
                    env.update(self._start_s3_server(self._data_dir, deadline))
                    storage = f"s3://{S3_BUCKET}/"
                url = f"tcp://{self.bootstrap}"
                self._tansu = Child.spawn(
                    "tansu", [tansu, "broker", "--listener-url", url,
                              "--advertised-listener-url", url, "--storage-engine", storage],
                    env, self._tansu_log_path(), pass_fds=self._inherited_fds())
                wait_until(lambda: kafka_answers(self._host, self._port), self._tansu,
                           deadline, f"Tansu on {self.bootstrap}", self._startup_timeout_s)
            except BaseException:
                self.stop()
                raise
            atexit.register(self.stop)  # until stop() unregisters it
            logger.info("started %r in %.2f s (log: %s)", self, time.monotonic() - started,
                        self._tansu.log_path)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop Tansu, then the S3 server; safe to call twice or before start."""
        with self._lock:
            was_started = self._tansu is not None
            deadline = time.monotonic() + timeout_s
            for child in (self._tansu, self._s3):  # Tansu first: it may still write to S3
                if child is not None:
                    child.stop(max(deadline - time.monotonic(), 0.5))
            self._tansu = self._s3 = None
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None
            if self._dir_lock is not None:
                os.close(self._dir_lock)
                self._dir_lock = None
            atexit.unregister(self.stop)
            if was_started:
                logger.info("stopped %r", self)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        if self._data_dir is None:
            return f"LocalBroker(bootstrap={self.bootstrap!r}, storage='memory')"
        return (f"LocalBroker(bootstrap={self.bootstrap!r}, storage='durable', "
                f"data_dir={str(self._data_dir)!r})")

    def _claim_port(self) -> None:
        if port_is_free(self._host, self._port):
            return
        if self._port_given:
            raise PortInUse(f"port {self._port} on {self._host} is already in use; choose "
                            "another with --port or omit --port to pick a free one")
        self._port = free_port(self._host)

    def _inherited_fds(self) -> tuple[int, ...]:
        return (self._dir_lock,) if self._dir_lock is not None else ()

    def _tansu_log_path(self) -> Path:
        if self._log_path is not None:
            return self._log_path
        if self._data_dir is not None:
            return self._data_dir / "tansu.log"
        self._temp_dir = Path(tempfile.mkdtemp(prefix="chainwatch-broker-"))
        return self._temp_dir / "tansu.log"

    def _start_s3_server(self, data_dir: Path, deadline: float) -> dict[str, str]:
        """Start the S3 server and wait for its bucket; return Tansu's S3 environment."""
        self._s3 = S3Server.spawn(data_dir, pass_fds=self._inherited_fds())
        self._s3.wait_ready(deadline, self._startup_timeout_s)
        return self._s3.tansu_env()

