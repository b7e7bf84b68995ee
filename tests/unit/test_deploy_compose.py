"""deploy/docker-compose.yml, validated by a real Compose implementation's ``config``.

``config`` needs no Docker engine. Every implementation found is used: the ``docker compose``
v2 plugin and a standalone ``docker-compose`` (Debian's package, which ``.ci/tools.sh``
installs). With none, these tests fail and say so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from pipeline.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
SERVICES = {"kafka", "topics", "audit-key", "producer", "scorer", "auditor", "prometheus",
            "grafana"}
CHAINWATCH_SERVICES = {"topics", "audit-key", "producer", "replay", "scorer", "auditor"}
ONE_SHOTS = {"topics", "audit-key"}  # run once and exit: nothing to scrape


def compose_commands() -> list[list[str]]:
    found = []
    docker = shutil.which("docker")
    if docker is not None and subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=60,
            check=False).returncode == 0:
        found.append([docker, "compose"])
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        found.append([standalone])
    if not found:
        pytest.fail("no Compose implementation found: run .ci/tools.sh "
                    "(installs Debian's docker-compose package)")
    return found


def compose(*args: str, env: Mapping[str, str] | None = None) -> list[str]:
    """stdout of ``<compose> -f deploy/docker-compose.yml ARGS`` for every implementation.

    The environment is minimal (no CHAINWATCH_* or GRAFANA_* from the caller's shell), plus
    ``env``; a variable that is used but neither set nor defaulted fails the test.
    """
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
             **(env or {})}
    outputs = []
    for command in compose_commands():
        result = subprocess.run([*command, "-f", str(COMPOSE_FILE), *args], env=clean,
                                capture_output=True, text=True, timeout=120, check=False)
        where = " ".join([*command, *args])
        assert result.returncode == 0, f"{where} failed:\n{result.stderr}"
        assert "is not set" not in result.stderr, f"{where}:\n{result.stderr}"
        outputs.append(result.stdout)
    return outputs


def services_of(config: str) -> dict[str, list[str]]:
    """Each service's lines in ``config`` output (block-style YAML, as both versions print)."""
    services: dict[str, list[str]] = {}
    section = ""
    for line in config.splitlines():
        if not line.startswith(" "):
            section = line
        elif section == "services:":
            if match := re.fullmatch(r"  ([\w.-]+):", line):
                services[match.group(1)] = []
            elif services:
                services[list(services)[-1]].append(line)
    return services


def commands_of(config: str) -> dict[str, list[str]]:
    """Each service's command list."""
    commands: dict[str, list[str]] = {}
    for service, lines in services_of(config).items():
        if "    command:" in lines:
            items = lines[lines.index("    command:") + 1:]
            command = []
            for item in items:
                if not (match := re.fullmatch(r"\s*- (.*)", item)):
                    break
                command.append(match.group(1).strip("'\""))
            commands[service] = command
    return commands


def test_config_is_valid_with_the_documented_defaults() -> None:
    for services in compose("config", "--services"):
        assert set(services.split()) >= SERVICES
    compose("config", "--quiet")


def test_replay_profile_adds_the_replay_producer() -> None:
    env = {"CHAINWATCH_REPLAY_DATA": "/srv/chain-data", "CHAINWATCH_REPLAY_PATH":
           "blte-ethereum-scam-tx/transactions.csv", "CHAINWATCH_REPLAY_FORMAT": "blte"}
    for services in compose("--profile", "replay", "config", "--services", env=env):
        assert "replay" in services.split()
    for config in compose("--profile", "replay", "config", env=env):
        command = commands_of(config)["replay"]
        assert command[:3] == ["produce", "replay",
                               "/data/blte-ethereum-scam-tx/transactions.csv"]
        assert command[command.index("--format") + 1] == "blte"
        assert "/srv/chain-data" in "\n".join(services_of(config)["replay"])


def test_variables_reach_the_services() -> None:
    env = {"CHAINWATCH_SYNTH_RATE": "1234", "GRAFANA_ADMIN_PASSWORD": "from-the-environment",
           "CHAINWATCH_IMAGE": "registry.example/chainwatch:9.9", "GRAFANA_PORT": "3300"}
    for config in compose("config", env=env):
        assert commands_of(config)["producer"][:2] == ["produce", "synth"]
        producer = commands_of(config)["producer"]
        assert producer[producer.index("--rate") + 1] == "1234"
        assert "from-the-environment" in config
        assert "registry.example/chainwatch:9.9" in config
        assert "127.0.0.1:3300:3000" in config or "published: \"3300\"" in config


def test_every_chainwatch_command_parses_with_the_cli() -> None:
    """The commands compose runs are ones the chainwatch CLI accepts (parsed, not run)."""
    for config in compose("--profile", "replay", "config"):
        commands = commands_of(config)
        assert set(commands) >= CHAINWATCH_SERVICES
        rejected = []
        for service in sorted(CHAINWATCH_SERVICES):
            try:
                build_parser().parse_args(commands[service])
            except SystemExit:
                rejected.append(f"{service}: chainwatch {' '.join(commands[service])}")
        assert not rejected, f"commands the chainwatch CLI rejects: {rejected}"


def test_prometheus_scrapes_the_compose_services_on_their_metrics_port() -> None:
    port = re.search(r'CHAINWATCH_METRICS_PORT:\s*"(\d+)"', COMPOSE_FILE.read_text())
    assert port is not None, "the chainwatch services get no CHAINWATCH_METRICS_PORT"
    prometheus = PROMETHEUS_CONFIG.read_text()
    static = re.findall(r'"([\w-]+):(\d+)"', prometheus)
    dns = re.findall(r'names:\s*\["([\w-]+)"\]\s*\n\s*type:\s*A\s*\n\s*port:\s*(\d+)',
                     prometheus)
    targets = {(host, target_port) for host, target_port in static + dns if host != "localhost"}
    assert targets == {(s, port.group(1)) for s in CHAINWATCH_SERVICES - ONE_SHOTS}
    for services in compose("--profile", "replay", "config", "--services"):
        assert {host for host, _ in targets} <= set(services.split())
    for config in compose("--profile", "replay", "config"):
        # every service built from the chainwatch image serves metrics on that port
        lines = services_of(config)
        for service in CHAINWATCH_SERVICES:
            assert re.search(r"CHAINWATCH_METRICS_PORT: ['\"]?" + port.group(1) + r"\b",
                             "\n".join(lines[service])), service


def test_every_chainwatch_service_serves_metrics_beyond_its_own_container() -> None:
    """chainwatch binds 127.0.0.1 by default; Prometheus, in its own container, reaches a
    service only if the compose file binds it to every interface of the container."""
    for config in compose("--profile", "replay", "config"):
        services = services_of(config)
        missing = [service for service in sorted(CHAINWATCH_SERVICES) if not re.search(
            r"CHAINWATCH_METRICS_HOST: ['\"]?0\.0\.0\.0\b", "\n".join(services[service]))]
        assert not missing, f"services without CHAINWATCH_METRICS_HOST 0.0.0.0: {missing}"


# topology of the compose stack's one node (ids, listeners, paths, heap), not broker tuning
COMPOSE_KAFKA_TOPOLOGY = {"KAFKA_NODE_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS", "KAFKA_LISTENERS",
                          "KAFKA_ADVERTISED_LISTENERS", "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                          "KAFKA_LOG_DIRS", "KAFKA_HEAP_OPTS"}


def kafka_environment(config: str) -> dict[str, str]:
    """The kafka service's KAFKA_* variables in ``config`` output, unquoted."""
    lines = services_of(config)["kafka"]
    start = lines.index("    environment:") + 1
    env = {}
    for line in lines[start:]:
        if not (match := re.fullmatch(r"      (\w+): (.*)", line)):
            break
        env[match.group(1)] = match.group(2).strip("'\"")
    return {name: value for name, value in env.items() if name.startswith("KAFKA_")}


def test_compose_kafka_runs_the_settings_of_the_kafka_engine() -> None:
    """deploy/docker-compose.yml's kafka service and `chainwatch broker --engine kafka` share
    one configuration, pipeline/broker/kafka_config.py: each of its settings for one node is
    set, to the same value, and nothing else beyond the stack's topology."""
    from pipeline.broker.kafka_config import KAFKA_VERSION, compose_env_name, shared_settings

    expected = {compose_env_name(key): value for key, value in shared_settings(1).items()}
    assert f"image: apache/kafka:{KAFKA_VERSION}" in COMPOSE_FILE.read_text()
    for config in compose("config"):
        env = kafka_environment(config)
        assert {name: env.get(name) for name in expected} == expected
        assert set(env) - set(expected) == COMPOSE_KAFKA_TOPOLOGY, "settings outside " \
            "kafka_config.py: add them there (BROKER), or to COMPOSE_KAFKA_TOPOLOGY if topology"


def volumes_of(lines: list[str]) -> dict[str, tuple[str, bool]]:
    """A service's volumes in ``config`` output: target → (source, read-only), from the short
    syntax (``source:target:ro``) or the long one (``type``/``source``/``target``/``read_only``)."""
    found: dict[str, tuple[str, bool]] = {}
    if "    volumes:" not in lines:
        return found
    entry: dict[str, str] = {}
    for line in [*lines[lines.index("    volumes:") + 1:], "    end:"]:
        if match := re.fullmatch(r"\s*- ([^:\s]+):([^:\s]+)(?::(\w+))?", line):
            found[match.group(2)] = (match.group(1), match.group(3) == "ro")
        elif match := re.fullmatch(r"\s*-? ?(type|source|target|read_only): (.*)", line):
            if match.group(1) == "type" and entry:
                found[entry["target"]] = (entry.get("source", ""), entry.get("read_only") == "true")
                entry = {}
            entry[match.group(1)] = match.group(2).strip("'\"")
        elif not line.startswith("      "):
            break
    if "target" in entry:
        found[entry["target"]] = (entry.get("source", ""), entry.get("read_only") == "true")
    return found


def mount_of(lines: list[str], path: str) -> tuple[str, bool] | None:
    """The volume (source, read-only) a service with config ``lines`` sees ``path`` on."""
    for target, mount in volumes_of(lines).items():
        if path.startswith(target.rstrip("/") + "/"):
            return mount
    return None


def test_scorers_verify_checkpoints_through_the_auditors_endpoint() -> None:
    """The scorers restore a checkpoint only with the auditor's proof, asked over HTTP, and
    pin the public key from a read-only volume: they mount neither the log nor the private
    key. Two auditors share the log and its key, one of them a standby."""
    port = re.search(r'CHAINWATCH_METRICS_PORT:\s*"(\d+)"', COMPOSE_FILE.read_text())
    assert port is not None
    for config in compose("config"):
        commands, services = commands_of(config), services_of(config)
        scorer, auditor = commands["scorer"], commands["auditor"]
        assert "--verify-checkpoints" in scorer
        assert scorer[scorer.index("--audit-url") + 1] == f"http://auditor:{port.group(1)}"
        scorer_env = "\n".join(services["scorer"])
        pinned = re.search(r"CHAINWATCH_AUDIT_PUBLIC_KEY: ['\"]?(\S+?)['\"]?$", scorer_env, re.M)
        assert pinned is not None, "the scorers pin no public key"
        keygen = commands["audit-key"]
        assert keygen[:2] == ["audit", "keygen"]
        assert keygen[keygen.index("--public-out") + 1] == pinned.group(1)
        private = keygen[keygen.index("--key") + 1]
        assert auditor[auditor.index("--key") + 1] == private
        store = auditor[auditor.index("--store") + 1]
        public_volume = mount_of(services["audit-key"], pinned.group(1))
        assert public_volume is not None
        assert mount_of(services["scorer"], pinned.group(1)) == (public_volume[0], True)
        assert mount_of(services["scorer"], private) is None
        assert mount_of(services["scorer"], store) is None
        assert mount_of(services["auditor"], private) == mount_of(services["audit-key"], private)
        assert re.search(r"^    (scale: 2|deploy:\n      replicas: 2)", "\n".join(
            services["auditor"]), re.M), "no standby auditor"
