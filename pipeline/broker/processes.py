"""Child processes of the local broker, and the loopback ports and probes they answer on.

A :class:`Child` runs in its own process group, logs to a file and, on Linux, gets SIGTERM
when its parent dies; :func:`wait_until` polls a readiness probe (:func:`kafka_answers`,
:func:`kafka_metadata`, :func:`http_status`) while watching that its children are alive.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BrokerError

logger = logging.getLogger(__name__)

_POLL_S = 0.02
_PROBE_TIMEOUT_S = 1.0
_LOG_TAIL_LINES = 6
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


# --- ports -----------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """True if a server could listen on ``host:port`` (SO_REUSEADDR, as Tansu binds)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# --- probes ----------------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        data += chunk
    return data


def kafka_answers(host: str, port: int) -> bool:
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


@dataclass(frozen=True)
class Metadata:
    """What one node's Metadata answer says: the live brokers, and each asked-for partition's
    leader (None while it has none)."""

    brokers: frozenset[int]
    leaders: dict[tuple[str, int], int | None]


class _Reader:
    """Big-endian fields of a Kafka response, read from the front."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> tuple[int, ...]:
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return values

    def number(self, fmt: str = ">i") -> int:
        return self.take(fmt)[0]

    def string(self) -> str | None:
        size = self.number(">h")
        if size < 0:
            return None
        text = self.data[self.at:self.at + size].decode()
        self.at += size
        return text

    def int_array(self) -> list[int]:
        return [self.number() for _ in range(self.number())]


def kafka_metadata(host: str, port: int, topics: tuple[str, ...] = ()) -> Metadata | None:
    """Metadata v4 (which Apache Kafka 4 still serves) from the broker at ``host:port``: the
    registered, unfenced brokers and the leaders of ``topics``' partitions; None when nothing
    answers."""
    client_id = b"chainwatch-probe"
    body = struct.pack(">i", len(topics))
    for topic in topics:
        body += struct.pack(">h", len(topic.encode())) + topic.encode()
    request = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id + body + b"\x00"
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            reader = _Reader(_recv_exact(sock, size))
        if reader.number() != 1:  # correlation id
            return None
        reader.number()  # throttle_time_ms
        brokers = set()
        for _ in range(reader.number()):
            brokers.add(reader.number())
            reader.string()  # host
            reader.number()  # port
            reader.string()  # rack
        reader.string()  # cluster id
        reader.number()  # controller id
        leaders: dict[tuple[str, int], int | None] = {}
        for _ in range(reader.number()):
            reader.number(">h")  # the topic's error code: an unknown topic has no partitions
            name = reader.string() or ""
            reader.number(">b")  # is_internal
            for _ in range(reader.number()):
                reader.number(">h")
                partition, leader = reader.take(">ii")
                reader.int_array()  # replicas
                reader.int_array()  # in-sync replicas
                leaders[(name, partition)] = leader if leader >= 0 else None
    except (OSError, struct.error, UnicodeDecodeError):
        return None
    return Metadata(frozenset(brokers), leaders)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str) -> int | None:
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


def clean_env() -> dict[str, str]:
    """This process's environment without AWS/S3 settings: real cloud keys never leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    env["NO_COLOR"] = "1"
    return env


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def parent_death_hook(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """On Linux, a preexec_fn that makes the child get ``sig`` when this process dies
    (subprocess runs it after a switch of user, which would clear the setting); None
    elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:  # runs in the child, between fork and exec
        prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return hook


@dataclass
class Child:
    """One child process, its own process-group leader, logging to ``log_path``."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int  # where this run's output starts in an appended log

    @classmethod
    def spawn(cls, name: str, argv: list[str], env: Mapping[str, str], log_path: Path,
              *, cwd: Path | None = None, pass_fds: tuple[int, ...] = ()) -> Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            offset = log_file.tell()
            try:
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    env=dict(env), cwd=cwd, start_new_session=True, pass_fds=pass_fds,
                    preexec_fn=parent_death_hook())  # noqa: PLW1509 - it only calls prctl
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


def wait_until(ready: Callable[[], bool], child: Child | Sequence[Child], deadline: float,
               what: str, timeout_s: float, *, poll_s: float = _POLL_S) -> None:
    """Poll ``ready`` until it holds; BrokerError if a ``child`` exits or the deadline passes."""
    children = [child] if isinstance(child, Child) else list(child)
    while not ready():
        for one in children:
            if not one.alive():
                name = what if len(children) == 1 else f"{one.name} of {what}"
                raise BrokerError(f"{name} exited with status {one.process.returncode} before "
                                  f"it was ready; its log ends: {one.log_tail()}")
        if time.monotonic() >= deadline:
            raise BrokerError(f"{what} was not ready within {timeout_s:g} s; raise "
                              f"startup_timeout_s if the machine is busy; its log ends: "
                              f"{children[0].log_tail()}")
        time.sleep(poll_s)
