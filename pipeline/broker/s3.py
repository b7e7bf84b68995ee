"""The durable broker's private S3 server: SeaweedFS ``weed mini`` on free loopback ports.

:class:`S3Server` keeps its data under ``data_dir/s3`` and serves the bucket Tansu stores
into. :func:`lock_data_dir` makes sure one broker at a time uses a ``data_dir``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.broker.binaries import find_weed_binary
from pipeline.broker.processes import Child, clean_env, http_status, wait_until
from pipeline.errors import BrokerError

S3_BUCKET = "tansu"
S3_REGION = "us-east-1"
CREDENTIALS_FILE = "s3-credentials.json"
_S3_ACCESS_KEY_ID = "chainwatch-local"
_ADMIN_GRPC_OFFSET = 10_000  # weed mini's workers dial its admin server at admin.port + 10000


def lock_data_dir(data_dir: Path) -> int:
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


def _remove_weed_sockets(ports: Iterable[int]) -> None:
    """``weed mini`` leaves ``/tmp/seaweedfs-<service>-<port>.sock`` behind, even on SIGTERM."""
    for folder in {Path("/tmp"), Path(tempfile.gettempdir())}:
        for port in ports:
            for path in folder.glob(f"seaweedfs-*-{port}.sock"):
                if path.is_socket():
                    with contextlib.suppress(OSError):
                        path.unlink()


@dataclass
class S3Server:
    """A running ``weed mini``: its child process, its ports and its S3 credentials."""

    child: Child
    ports: dict[str, int]
    credentials: dict[str, str]  # AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY

    @classmethod
    def spawn(cls, data_dir: Path, pass_fds: tuple[int, ...] = ()) -> S3Server:
        """Start ``weed mini`` on free loopback ports, storing under ``data_dir/s3``."""
        weed = find_weed_binary()
        access_key, secret_key = _s3_credentials(data_dir)
        storage = data_dir / "s3"
        storage.mkdir(parents=True, exist_ok=True)
        ports = _s3_server_ports()
        argv = [weed, "-logtostderr", "mini", f"-dir={storage}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-bucket={S3_BUCKET}",
                *(f"-{flag}={port}" for flag, port in ports.items()),
                "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.telemetry=false", "-volume.preStopSeconds=0"]
        credentials = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
        child = Child.spawn("the S3 server (weed mini)", argv, clean_env() | credentials,
                            data_dir / "s3.log", cwd=storage, pass_fds=pass_fds)
        return cls(child, ports, credentials)

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the S3 API."""
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def alive(self) -> bool:
        return self.child.alive()

    def wait_ready(self, deadline: float, timeout_s: float) -> None:
        """Wait until the S3 API answers and the bucket exists; BrokerError if it never does."""
        bucket_url = f"http://127.0.0.1:{self.ports['filer.port']}/buckets/{S3_BUCKET}/"
        # The bucket appears ~1 s after the S3 port opens; Tansu needs it from its first write.
        wait_until(
            lambda: http_status(bucket_url) == 200 and http_status(self.endpoint) is not None,
            self.child, deadline, "the S3 server (weed mini)", timeout_s)

    def tansu_env(self) -> dict[str, str]:
        """The environment that points Tansu's ``s3://`` storage engine at this server."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true",
                "AWS_DEFAULT_REGION": S3_REGION, **self.credentials}

    def stop(self, timeout_s: float) -> None:
        """Stop ``weed mini`` (see :meth:`Child.stop`) and remove the socket files it leaves."""
        self.child.stop(timeout_s)
        _remove_weed_sockets(self.ports.values())
