"""Helpers shared by the integration and reliability tests: seeded input, scorer and auditor
processes as a user starts them, and the alert sets their runs are compared by.

The contract an interrupted run is held to (see tests/integration/test_scorer_recovery.py):
the *set* of alert ids equals an uninterrupted run's, and every copy of an alert is
byte-identical to the reference's (a restart may re-send an alert, never change it).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pipeline import clients
from pipeline.alerts import Alert
from pipeline.codec import decode
from pipeline.records import ChainRecord
from pipeline.settings import Settings, env_var
from pipeline.topics import ensure_topics
from producers.campaigns import CAMPAIGN_TYPES
from producers.sink import KafkaSink
from producers.synth import SynthConfig, SyntheticChain
from tests.conftest import CHAINWATCH, cli_env, unique

# -- input ------------------------------------------------------------------------------------


def chain_records(seed: int, blocks: range, campaign_rate: float = 4.0) -> list[ChainRecord]:
    """The transactions and DEX events of ``blocks`` of the seeded synthetic chain, in order."""
    chain = SyntheticChain(SynthConfig(seed=seed, blocks=blocks.stop,
                                       campaigns=dict.fromkeys(CAMPAIGN_TYPES, campaign_rate)))
    return [record for i, block in enumerate(chain.blocks()) if i in blocks
            for record in [*block.transactions, *block.dex_events]]


def produce_chain(settings: Settings, seed: int, blocks: range,
                  campaign_rate: float = 4.0) -> int:
    """Write ``blocks`` of the seeded chain to the input topics; return the record count."""
    return write_records(settings, chain_records(seed, blocks, campaign_rate))


def write_records(settings: Settings, records: list[ChainRecord]) -> int:
    """Write ``records`` to their input topics, keyed as producers key them; flush."""
    with KafkaSink(settings) as sink:
        for record in records:
            sink.write(record)
    return len(records)


def synth_command(seed: int, blocks: int, rate: float | None = None,
                  campaign_rate: float = 4.0) -> list[str]:
    """``chainwatch produce synth`` as a user types it, seeded."""
    campaigns = ",".join(f"{name}={campaign_rate}" for name in sorted(CAMPAIGN_TYPES))
    return [CHAINWATCH, "produce", "synth", "--seed", str(seed), "--blocks", str(blocks),
            "--campaigns", campaigns, "--json", *(["--rate", str(rate)] if rate else [])]


# -- scorer runs ------------------------------------------------------------------------------


def scorer_run(settings: Settings, tmp: Path, name: str) -> Settings:
    """Settings for one scorer run over the same input: own group, checkpoints, alerts topic."""
    run = settings.replace(consumer_group=unique(f"g-{name}"),
                           checkpoint_uri=str(tmp / f"ckpt-{name}"),
                           topics__alerts=unique(f"alerts-{name}"))
    ensure_topics(run)
    return run


def checkpoint_key_file(settings: Settings) -> Path:
    """The checkpoint key of a run: beside its checkpoint directory, shared by its scorers
    (where :func:`tests.conftest.cli_env` puts it)."""
    return Path(cli_env(settings)[env_var("checkpoint_key_file")])


def start_scorer(settings: Settings, *extra: str,
                 log: IO[str] | None = None) -> subprocess.Popen[str]:
    """``chainwatch score`` with frequent checkpoints and a 4 s session timeout (a SIGKILLed
    member's partitions move sooner), its JSON summary on stdout."""
    env = cli_env(settings)
    return subprocess.Popen(
        [CHAINWATCH, "score", "--checkpoint-every", "2000", "--checkpoint-interval", "0.5",
         "--session-timeout", "4", "--json", "--log-level", "INFO", *extra], env=env,
        stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL, text=True)


def sigkill(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` with SIGKILL and reap it; it must not have exited on its own."""
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"exited by itself with {proc.returncode}"


def checkpoint_files(run: Settings) -> list[Path]:
    return sorted(Path(run.checkpoint_uri).rglob("*.ckpt"))


def drain(consumer: KafkaConsumer, quiet_polls: int = 6) -> list[Any]:
    """Every message ``consumer`` gets until it has read every assigned partition to its
    high-water mark (all that a finished writer wrote: the callers read after theirs have
    ended), or else until ``quiet_polls`` polls in a row bring none (3 s, which every read
    used to wait out)."""
    got: list[Any] = []
    quiet = 0
    while quiet < quiet_polls:
        batch = consumer.poll(timeout_ms=500)
        quiet = 0 if batch else quiet + 1
        for messages in batch.values():
            got.extend(messages)
        if clients.caught_up(consumer):
            break
    return got


def read_alerts(consumer: KafkaConsumer) -> dict[str, set[bytes]]:
    """alert id → the distinct encodings seen (one, if re-sent alerts are byte-identical)."""
    return alerts_of(drain(consumer))


def alerts_of(messages: list[Any]) -> dict[str, set[bytes]]:
    """alert id → the distinct encodings among ``messages`` (Kafka records of alerts)."""
    seen: dict[str, set[bytes]] = {}
    for m in messages:
        seen.setdefault(Alert.from_json(m.value).alert_id, set()).add(m.value)
    return seen


@dataclass(frozen=True)
class AlertDiff:
    """How a run's alerts differ from the reference's.

    ``lost``: reference ids the run lacks; ``duplicated``: ids the run raised that the
    reference did not (the same finding raised again under another id); ``changed``: ids
    with an encoding the reference never produced. Re-sent byte-identical copies are none
    of these.
    """

    lost: frozenset[str]
    duplicated: frozenset[str]
    changed: frozenset[str]

    @classmethod
    def of(cls, got: dict[str, set[bytes]], reference: dict[str, set[bytes]],
           compare_bytes: bool = True) -> AlertDiff:
        return cls(frozenset(set(reference) - set(got)), frozenset(set(got) - set(reference)),
                   frozenset(i for i in set(got) & set(reference)
                             if compare_bytes and got[i] != reference[i]))

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.changed)

    def figures(self) -> str:
        return (f"lost={len(self.lost)} duplicated={len(self.duplicated)} "
                f"changed={len(self.changed)}")


# -- alerts for the auditor -------------------------------------------------------------------


def make_alert(i: int) -> Alert:
    """The ``i``-th of a family of distinct, deterministic rug-pull alerts."""
    return Alert.build(type="rug_pull", severity="high", score=0.9, subject=f"0x{i:040x}",
                       detector="liquidity_drain", model_version="1", evidence={"drop": 0.95},
                       source={"topic": "chain.dex", "partition": i % 4, "offset": i,
                               "item_ids": [f"log_{i}"]}, event_time=i, detected_at=i)


def send_alerts(settings: Settings, ids: range,
                producer_factory: Callable[..., KafkaProducer]) -> list[Alert]:
    """Send ``make_alert(i)`` for each ``i`` to the alerts topic, keyed by subject; flush."""
    producer = producer_factory()
    alerts = [make_alert(i) for i in ids]
    for a in alerts:
        producer.send(settings.topics.alerts, value=a.to_json(), key=a.subject.encode())
    producer.flush()
    return alerts


def read_chain_topics(settings: Settings) -> dict[tuple[str, int], list[tuple[bytes, Any]]]:
    """Every message of the run's transactions and DEX topics, per (topic, partition), in
    order, as (bytes, decoded record): read from the start until quiet and caught up."""
    consumer: KafkaConsumer = clients.consumer(settings, enable_auto_commit=False)
    out: dict[tuple[str, int], list[tuple[bytes, Any]]] = {}
    try:
        tps = [TopicPartition(t, p) for t in (settings.topics.transactions, settings.topics.dex)
               for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        quiet = 0
        while quiet < 8 or not clients.caught_up(consumer):
            batch = consumer.poll(timeout_ms=200)
            quiet = 0 if batch else quiet + 1
            for tp, messages in batch.items():
                out.setdefault((tp.topic, tp.partition), []).extend(
                    (m.value, decode(m.value)) for m in messages)
    finally:
        consumer.close()
    return out


# -- kafka-python on a cluster with a node down ---------------------------------------------


class _FlattenRecords(logging.Filter):
    """Turns a log record's arguments and exception into text as it is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return True


@contextlib.contextmanager
def refused_connections_leak() -> Iterator[None]:
    """kafka-python 3.0.12 leaves the socket of a refused connection open (kafka/net/inet.py
    raises on ECONNREFUSED without closing it), as clients do while a node is down. The
    exceptions its log records carry would keep those sockets alive until pytest's log
    capture lets go of them, after this test, where the unclosed-socket ResourceWarning
    becomes an error. Here the records become text and the sockets are collected."""
    flatten = _FlattenRecords()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(flatten)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(flatten)
            gc.collect()
