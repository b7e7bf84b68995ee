"""Child processes of the local broker, and the loopback ports and probes they answer on.

A :class:`Child` runs in its own process group, logs to a file and, on Linux, gets SIGTERM
when its parent dies; :func:`wait_until` polls a readiness probe (:func:`kafka_answers`,
:func:`http_status`) while watching that the child is still alive.
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
from collections.abc import Callable, Mapping
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


def wait_until(ready: Callable[[], bool], child: Child, deadline: float, what: str,
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
