"""deploy/Dockerfile and .dockerignore, read as text (no Docker engine here), and the
image's health check run for real against a small HTTP server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(current)
        current = ""
    assert not current, "the Dockerfile ends in a continuation line"
    out = []
    for text in logical:
        keyword, _, args = text.strip().partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def test_multi_stage_builder_makes_wheels_and_runtime_is_slim_python() -> None:
    builder, runtime = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert builder[0][1].endswith(" AS builder")
    assert any(k == "RUN" and "pip wheel" in a for k, a in builder)
    args = dict(a.split("=", 1) for k, a in instructions() if k == "ARG" and "=" in a)
    python = args["PYTHON_VERSION"]
    assert python in {"3.11", "3.12"}
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim(-\w+)?", runtime[0][1])
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11" and tuple(map(int, python.split("."))) >= (3, 11)
    # the runtime takes the installed environment, not the wheels or the sources
    assert [a for k, a in runtime if k == "COPY"] == ["--from=builder /opt/chainwatch "
                                                      "/opt/chainwatch"]


def test_runs_as_a_non_root_user_with_chainwatch_as_entrypoint() -> None:
    runtime = stages()[-1]
    users = [a for k, a in runtime if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert [a for k, a in runtime if k == "ENTRYPOINT"] == ['["chainwatch"]']
    env = " ".join(a for k, a in runtime if k == "ENV")
    assert "CHAINWATCH_METRICS_PORT=9108" in env


def test_builder_copies_what_the_wheel_build_needs_and_dockerignore_lets_it_through() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]
                ["include"]}
    needed = {"pyproject.toml", project["project"]["readme"], *packages}
    copied: set[str] = set()
    for keyword, args in stages()[0]:
        if keyword == "COPY" and not args.startswith("--from"):
            copied.update(s.rstrip("/") for s in args.split()[:-1])
    assert needed <= copied
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore, ".dockerignore should be an allow-list"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for source in copied:
        assert (ROOT / source).exists(), source
        assert source in allowed, f".dockerignore keeps {source} out of the build context"


def healthcheck_command() -> list[str]:
    (check,) = [a for k, a in stages()[-1] if k == "HEALTHCHECK"]
    command = json.loads(check[check.index("CMD ") + 4:])
    assert isinstance(command, list)
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_asks_healthz_on_the_metrics_port(
        health_server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch, status: int,
        healthy: bool) -> None:
    monkeypatch.setattr(_Health, "status", status)
    port = str(health_server.server_address[1])
    result = subprocess.run(healthcheck_command(), env={"CHAINWATCH_METRICS_PORT": port},
                            capture_output=True, timeout=30, check=False)
    assert (result.returncode == 0) is healthy
