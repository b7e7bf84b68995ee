"""A real Prometheus server scrapes a running scorer fed by a running producer.

Prometheus (Debian's ``prometheus`` package; ``.ci/tools.sh`` installs it) scrapes both
services every second, with chainwatch's own alert rules from ``deploy/prometheus/rules``
loaded. Through its HTTP API the test waits until throughput, scoring latency and alert
series all have values, and checks that every rule evaluates without error against them.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import CHAINWATCH, cli_env, free_port, http_get

pytestmark = pytest.mark.integration

_T = TypeVar("_T")

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"
QUERIES = {
    "throughput": "sum(rate(chainwatch_records_consumed_total[15s]))",
    "latency": "histogram_quantile(0.99, sum by (le) "
               "(rate(chainwatch_scoring_latency_seconds_bucket[30s])))",
    "alerts": "chainwatch_alerts_total",
}


class Processes:
    """Started processes, each stopped at the end: SIGTERM, then SIGKILL after a grace."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.started.append((proc, log))

    def stop_all(self) -> None:
        for proc, _ in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, log in reversed(self.started):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail("the prometheus binary is not installed: run .ci/tools.sh (it installs "
                    "Debian's prometheus package)")
    return found


def query(base: str, expr: str) -> list[dict[str, Any]]:
    status, body = http_get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if status != 200:
        return []
    result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
    return result


def values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def test_prometheus_scrapes_throughput_latency_and_alerts_from_a_running_scorer(
        settings: Settings, tmp_path: Path, processes: Processes) -> None:
    prometheus = prometheus_binary()
    ensure_topics(settings)
    scorer_port, producer_port, prom_port = free_port(), free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in sorted(RULES.glob("*.yml"))],
        "scrape_configs": [
            {"job_name": "chainwatch-scorer",
             "static_configs": [{"targets": [f"127.0.0.1:{scorer_port}"]}]},
            {"job_name": "chainwatch-producer",
             "static_configs": [{"targets": [f"127.0.0.1:{producer_port}"]}]},
        ]}))
    prom = f"http://127.0.0.1:{prom_port}"
    env = cli_env(settings) | {"CHAINWATCH_METRICS_HOST": "127.0.0.1"}
    processes.start("prometheus", [
        prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"])
    processes.start("scorer", [CHAINWATCH, "score", "--metrics-port", str(scorer_port),
                               "--session-timeout", "2"], env)  # a join in 1 s, not 5
    processes.start("producer", [
        CHAINWATCH, "produce", "synth", "--blocks", "3000", "--rate", "1500", "--seed", "5",
        "--difficulty", "0", "--metrics-port", str(producer_port)], env)

    found: dict[str, list[float]] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        found = {name: values(query(prom, expr)) for name, expr in QUERIES.items()}
        if (any(v > 0 for v in found["throughput"])
                and any(not math.isnan(v) for v in found["latency"])
                and any(v > 0 for v in found["alerts"])):
            break
        time.sleep(0.5)
    else:
        logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
        raise AssertionError(f"series without values after 90 s: {found}; logs: {logs}")

    producer_ready = http_get(f"http://127.0.0.1:{producer_port}/readyz")
    assert producer_ready[0] == 200, producer_ready  # still sending
    latency = max(v for v in found["latency"] if not math.isnan(v))
    assert 0 < latency <= 0.1, latency  # the histogram's top finite bucket
    # each series below fills in at its own scrape: wait for what is asserted, not a snapshot
    eventually("both jobs are up",
               lambda: {s["metric"]["job"]: s["value"][1] for s in query(prom, "up")},
               lambda up: up == {"chainwatch-scorer": "1", "chainwatch-producer": "1"})
    eventually("the producer's records are counted",
               lambda: values(query(prom, "sum(chainwatch_records_produced_total"
                                          '{job="chainwatch-producer"})')),
               lambda produced: bool(produced) and produced[0] > 0)
    eventually("a lag series for each of the 16 input partitions (4 topics x 4)",
               lambda: values(query(prom, "count(chainwatch_consumer_lag)")),
               lambda count: count == [16.0])

    rules = eventually(
        "the rules of deploy/prometheus/rules were loaded and each evaluated once",
        lambda: rules_of(prom),
        lambda rules: bool(rules) and all(r.get("health") in ("ok", "err") for r in rules))
    broken = {r["name"]: r.get("lastError") for r in rules if r.get("health") == "err"}
    assert not broken, broken


def eventually(what: str, probe: Callable[[], _T], holds: Callable[[_T], bool],
               timeout_s: float = 60.0) -> _T:
    """Poll ``probe`` until ``holds`` its value; fail with the last value after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if holds(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not so after {timeout_s:.0f} s; last value: "
                                 f"{value!r}")
        time.sleep(0.5)


def rules_of(prom: str) -> list[dict[str, Any]]:
    """Every alerting and recording rule Prometheus reports, [] until it answers."""
    status, body = http_get(f"{prom}/api/v1/rules")
    if status != 200:
        return []
    groups = json.loads(body)["data"]["groups"]
    return [rule for group in groups for rule in group["rules"]]
