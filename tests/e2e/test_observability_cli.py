"""--metrics-port and --log-format as a user types them (no broker needed: these fail first)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CHAINWATCH

pytestmark = pytest.mark.e2e

SERVICES = [("score",), ("audit", "serve"), ("produce", "synth"),
            ("produce", "replay", "{data}", "--format", "transactions")]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHAINWATCH, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, check=False)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("command", [" ".join(c[:2]) for c in SERVICES[:3]] + ["demo", "topics"])
def test_every_command_has_log_format_and_services_have_metrics_port(command: str) -> None:
    result = run(*command.split(), "--help")
    assert result.returncode == 0
    assert "--log-format {text,json}" in result.stdout
    assert ("--metrics-port" in result.stdout) == (command not in ("demo", "topics"))


@pytest.mark.parametrize("args", [
    ("score", "--metrics-port", "70000"),
    ("audit", "serve", "--metrics-port", "nine"),
    ("produce", "synth", "--metrics-port", "-1"),
    ("score", "--log-format", "xml"),
])
def test_bad_values_are_one_line(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--help" in result.stderr


@pytest.mark.parametrize("service", SERVICES, ids=lambda c: " ".join(c[:2]))
def test_a_taken_metrics_port_is_one_line_before_any_work(
        service: tuple[str, ...], taken_port: int, tmp_path: Path) -> None:
    data = tmp_path / "transactions.csv"
    data.write_text("hash,block_number\n")
    service = tuple(arg.replace("{data}", str(data)) for arg in service)
    result = run(*service, "--metrics-port", str(taken_port), "--bootstrap", "127.0.0.1:1",
                 env={"CHAINWATCH_METRICS_HOST": "127.0.0.1",
                      "CHAINWATCH_AUDIT_STORE": f"{tmp_path}/audit.db"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"metrics port {taken_port} on 127.0.0.1 is already in use" in lines[0]
    assert "Traceback" not in result.stderr


def test_json_log_format_from_the_environment_makes_errors_json(taken_port: int) -> None:
    result = run("score", "--metrics-port", str(taken_port),
                 env={"CHAINWATCH_METRICS_HOST": "127.0.0.1", "CHAINWATCH_LOG_FORMAT": "json"})
    assert result.returncode == 2
    doc = json.loads(result.stderr)  # exactly one JSON object
    assert doc["level"] == "ERROR"
    assert doc["message"].startswith("chainwatch score: error: metrics port")
