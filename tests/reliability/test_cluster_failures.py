"""Broker failures on a three-node Apache Kafka cluster, while the pipeline runs.

A producer streams ~130k synthetic events into topics with three replicas
(``min.insync.replicas=2``), two scorers score them with Kafka transactions and the auditor
appends their alerts and checkpoints. Meanwhile the node leading the first transactions
partition is SIGKILLed and restarted, and then the node leading the first alerts partition
is stopped (SIGSTOP: alive, silent) for 30 s. Afterwards the alerts are those of an
uninterrupted run over the same input, each exactly once on a ``read_committed`` reader, the
audit log holds each of them once, and ``chainwatch audit verify`` passes.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline import clients
from pipeline.alerts import Alert
from pipeline.audit import AuditReader
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from tests.conftest import CHAINWATCH, cli_env, unique
from tests.helpers import (
    chain_records,
    drain,
    refused_connections_leak,
    scorer_run,
    start_scorer,
    synth_command,
)
from tests.reliability.conftest import Reaper
from tests.reliability.procs import finish, tracebacks, wait_covered

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.kafka_cluster]

SEED = 11
BLOCKS = 3100  # ~129k events
STREAM_S = 75.0  # the failures below happen inside the stream
PAUSE_S = 30.0


def _alert_ids(messages: list[Any]) -> Counter[str]:
    return Counter(Alert.from_json(m.value).alert_id for m in messages)


def _read_alerts(settings: Settings) -> Counter[str]:
    """Alert id → copies on the alerts topic of ``settings``, as read_committed reads them."""
    consumer = clients.consumer(settings, settings.topics.alerts, group_id=unique("read"))
    try:
        return _alert_ids(drain(consumer))
    finally:
        consumer.close()


def _logged(store: Path) -> Counter[str]:
    """Leaf id → copies in the audit log (0 leaves while it does not exist yet)."""
    try:
        with AuditReader.open(store) as reader:
            return Counter(reader.leaf(i).id for i in range(reader.size))
    except Exception:  # being created
        return Counter()


def _failures(cluster: Any, settings: Settings, figures: Callable[[str], None]) -> None:
    """The leader of the first transactions partition SIGKILLed at 10 s and back at 20 s;
    the leader of the first alerts partition paused at 25 s for PAUSE_S."""
    started = time.monotonic()
    time.sleep(10)
    killed = cluster.leader_of(settings.topics.transactions, 0)
    cluster.node(killed).kill()
    time.sleep(10)
    cluster.node(killed).start()
    time.sleep(5)
    paused = cluster.leader_of(settings.topics.alerts, 0)
    cluster.node(paused).pause()
    time.sleep(PAUSE_S)
    cluster.node(paused).resume()
    figures(f"SIGKILLed node {killed} at 10 s (restarted at 20 s), paused node {paused} at "
            f"25 s for {PAUSE_S:.0f} s, all within {time.monotonic() - started:.0f} s")


def test_leader_kill_and_a_stopped_broker_lose_and_duplicate_nothing(
        kafka_cluster: Any, tmp_path: Path, reaper: Reaper,
        figures: Callable[[str], None]) -> None:
    names = {f"topics__{role}": unique(f"c-{role}") for role in Settings().topics.all()}
    store = tmp_path / "audit" / "audit.db"
    settings = Settings.load(env={}).replace(
        bootstrap_servers=kafka_cluster.bootstrap, consumer_group=unique("g-cluster"),
        checkpoint_uri=str(tmp_path / "ckpt"), audit__store=str(store), **names)
    ensure_topics(settings, replication_factor=3)
    env = cli_env(settings) | {"CHAINWATCH_AUDIT_STORE": str(store)}
    events = len(chain_records(SEED, range(BLOCKS)))
    logs = [tmp_path / f"{name}.log" for name in ("producer", "scorer-0", "scorer-1",
                                                  "auditor")]
    with contextlib.ExitStack() as stack:
        stack.enter_context(refused_connections_leak())  # clients meet the node that is down
        out = [stack.enter_context(path.open("w")) for path in logs]
        stream = reaper(subprocess.Popen(synth_command(SEED, BLOCKS, events / STREAM_S),
                                         env=env, stdout=subprocess.PIPE, stderr=out[0],
                                         text=True))
        scorers = [reaper(start_scorer(settings, log=log)) for log in out[1:3]]
        auditor = reaper(subprocess.Popen(
            [CHAINWATCH, "audit", "serve", "--log-level", "INFO"], env=env,
            stdout=subprocess.DEVNULL, stderr=out[3], text=True))
        _failures(kafka_cluster, settings, figures)
        summary = json.loads(finish(stream, timeout_s=300))
        assert summary["produced"] == events
        assert wait_covered(settings, events, scorers, timeout_s=240) is not None, \
            "the scorers did not read the whole stream"
        for scorer in scorers:
            scorer.send_signal(signal.SIGTERM)
        for scorer in scorers:
            finish(scorer, timeout_s=120)

        reference = scorer_run(settings, tmp_path, "reference")
        finish(reaper(start_scorer(reference, "--until-caught-up")), timeout_s=300)
        expected = _read_alerts(reference)
        got = _read_alerts(settings)  # read_committed
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not set(expected) <= set(_logged(store)):
            assert auditor.poll() is None, "the auditor exited"
            time.sleep(0.5)
        auditor.send_signal(signal.SIGTERM)
        finish(auditor, timeout_s=60)
    logged = _logged(store)
    verify = subprocess.run([CHAINWATCH, "audit", "verify"], env=env, capture_output=True,
                            text=True, timeout=300, check=False)

    lost, extra = set(expected) - set(got), set(got) - set(expected)
    twice = {i for i, n in got.items() if n > 1}
    figures(f"events={events} alerts={len(expected)} lost={len(lost)} extra={len(extra)} "
            f"copies>1={len(twice)} logged={sum(logged[i] for i in expected)}")
    assert len(expected) >= 20, expected  # alerts worth losing
    assert not lost and not extra and not twice
    assert all(logged[i] == 1 for i in expected), "an alert is not in the audit log once"
    assert verify.returncode == 0 and verify.stdout.startswith("OK"), verify.stdout
    assert not tracebacks(*logs)
