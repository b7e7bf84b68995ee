"""The embedded pipeline: broker, synthetic producer, scorer, auditor and alert sink in one
process.

``chainwatch demo`` runs this: it starts a memory-backed local broker on a free port, creates
the topics, streams a synthetic chain with one labelled campaign of each type into Kafka from
a producer thread while the scorer consumes and alerts, the auditor appends every alert and
checkpoint to a fresh audit log and the alert sink stores every alert in a fresh alert store,
reads the alerts back, grades them against the campaigns' ground truth, verifies the audit
log, then stops the broker and summarises.

The audit log and the alert store outlive the demo (``chainwatch audit verify --store …`` and
``chainwatch alerts list --store …`` read them later); a demo replaces the log and the store
a previous demo left at the same paths, and keeps the log's signing key.
"""

from __future__ import annotations

import functools
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.alert_sink import AlertSinkService
from consumers.auditor import AuditorService
from consumers.evaluate import headline, read_alerts
from consumers.scorer import ScorerService
from pipeline.alert_store import AlertStore
from pipeline.audit import verify_store
from pipeline.audit.trust import default_public_key_path
from pipeline.broker import LocalBroker
from pipeline.evaluation import evaluate_synthetic
from pipeline.progress import Progress, rate
from pipeline.rules import RuleSet
from pipeline.scoring import Scorer
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from producers.campaigns import CAMPAIGN_TYPES
from producers.sink import KafkaSink
from producers.synth import SynthConfig, SyntheticChain


@dataclass
class DemoResult:
    """What a demo run did; ``to_json_dict`` is the ``--json`` output."""

    seed: int
    blocks: int
    bootstrap: str
    events_produced: int
    transactions: int
    dex_events: int
    events_scored: int
    dead_lettered: int
    alerts_by_type: dict[str, int]
    campaigns: list[dict[str, Any]]
    elapsed_s: float
    evaluation: dict[str, dict[str, Any]]
    audit: dict[str, Any]
    alert_store: str = ""
    alerts_stored: int = 0
    alert_id_to_try: str = ""

    @property
    def events_per_s(self) -> float:
        return self.events_scored / self.elapsed_s if self.elapsed_s else 0.0

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "events_produced": self.events_produced,
            "events_scored": self.events_scored,
            "dead_lettered": self.dead_lettered,
            "alerts_by_type": dict(sorted(self.alerts_by_type.items())),
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.events_per_s, 1),
            "bootstrap": self.bootstrap,
            "seed": self.seed,
            "blocks": self.blocks,
            "campaigns": [{k: c[k] for k in ("campaign_id", "type", "subject", "start_block",
                                             "phases", "end_block")} for c in self.campaigns],
            "evaluation": self.evaluation,
            "audit": self.audit,
            "alert_store": self.alert_store,
            "alerts_stored": self.alerts_stored,
            "alert_id_to_try": self.alert_id_to_try,
        }


class _Producer(threading.Thread):
    """Streams the synthetic chain into Kafka; ``done`` is set when all is flushed."""

    def __init__(self, settings: Settings, chain: SyntheticChain, stop: threading.Event) -> None:
        super().__init__(name="chainwatch-synth", daemon=True)
        self.settings, self.chain, self.stop = settings, chain, stop
        self.done = threading.Event()
        self.transactions = 0
        self.dex_events = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with KafkaSink(self.settings) as sink:
                for block in self.chain.blocks():
                    if self.stop.is_set():
                        break
                    for tx in block.transactions:
                        sink.write(tx)
                    for ev in block.dex_events:
                        sink.write(ev)
                    self.transactions += len(block.transactions)
                    self.dex_events += len(block.dex_events)
        except BaseException as exc:  # reported by the main thread
            self.error = exc
            self.stop.set()
        finally:
            self.done.set()


def run_demo(settings: Settings, blocks: int, seed: int, progress: bool = True,
             stop: threading.Event | None = None) -> DemoResult:
    """Run the whole pipeline once on a fresh local broker and return what happened."""
    stop = stop or threading.Event()
    rules = RuleSet.load(settings.detectors)  # a rule that cannot run fails before any work
    chain = SyntheticChain(SynthConfig(seed=seed, blocks=blocks,
                                       campaigns=dict.fromkeys(CAMPAIGN_TYPES, 4.0)))
    started = time.monotonic()
    store = Path(settings.audit.store)
    _remove_log(store)  # a log's input offsets are for its broker's topics; this one is new
    alert_store = Path(settings.alerts.store)
    _remove_log(alert_store)  # so are the alert store's
    scored = threading.Event()
    with LocalBroker() as broker, tempfile.TemporaryDirectory(prefix="chainwatch-") as tmp:
        settings = settings.replace(bootstrap_servers=broker.bootstrap,
                                    checkpoint_uri=str(Path(tmp) / "checkpoints"),
                                    checkpoint_key_file=str(Path(tmp) / "checkpoint.key"))
        ensure_topics(settings)
        producer = _Producer(settings, chain, stop)
        # one member in the group: a short session makes the join take ~1 s, not ~5 s
        scorer = ScorerService(settings, stop=stop, session_timeout_ms=2000,
                               heartbeat_interval_ms=500,
                               scorer_factory=functools.partial(Scorer, rules=rules))
        auditor = AuditorService(settings, stop=stop)
        sink = AlertSinkService(settings, stop=stop, context_drain_s=30.0)
        sink.prepare()  # a store that cannot be made fails before the threads start
        audit_error: list[BaseException] = []
        auditing = _follower(auditor, scored, stop, audit_error, "chainwatch-auditor")
        sinking = _follower(sink, scored, stop, audit_error, "chainwatch-alert-sink")
        status = Progress(lambda: (
            f"demo: produced {producer.transactions + producer.dex_events:,} · scored "
            f"{scorer.stats.consumed:,} ({rate(scorer.stats.consumed, status.elapsed)}) · "
            f"alerts {sum(scorer.stats.alerts_by_type.values())}"), enabled=progress)
        ticker = _Ticker(status, stop)
        producer.start()
        auditing.start()
        sinking.start()
        ticker.start()
        try:
            stats = scorer.run(input_finished=producer.done.is_set)
            scored.set()  # auditor and sink stop once they have read all the scorer wrote
            auditing.join()
            sinking.join()
        finally:
            stop.set()
            producer.join()
            auditing.join()
            sinking.join()
            ticker.join()
        status.done()
        if producer.error is not None:
            raise producer.error
        if audit_error:
            raise audit_error[0]
        alerts = read_alerts(settings, sum(stats.alerts_by_type.values()))
    public_key = default_public_key_path(settings)
    verified = verify_store(store, public_key=public_key)
    report = evaluate_synthetic(alerts, chain.truth, stats.consumed)
    stored, to_try = _alert_to_try(alert_store)
    return DemoResult(
        seed=seed, blocks=blocks, bootstrap=broker.bootstrap,
        events_produced=producer.transactions + producer.dex_events,
        transactions=producer.transactions, dex_events=producer.dex_events,
        events_scored=stats.scored, dead_lettered=stats.dead_lettered,
        alerts_by_type=dict(stats.alerts_by_type), campaigns=chain.truth,
        elapsed_s=time.monotonic() - started,
        evaluation={kind: {k: v for k, v in headline(kind, m).items()
                           if k in ("precision", "recall", "f1", "median_delay_blocks")}
                    for kind, m in report.items() if m.get("campaigns")},
        audit={"store": str(store), "tree_size": verified.size,
               "root": verified.root.hex() if verified.root else "",
               "verified": verified.ok, "public_key": str(public_key)},
        alert_store=str(alert_store), alerts_stored=stored, alert_id_to_try=to_try,
    )


def _follower(service: AuditorService | AlertSinkService, scored: threading.Event,
              stop: threading.Event, errors: list[BaseException],
              name: str) -> threading.Thread:
    """A thread running ``service`` until it has read all the scorer wrote; an error it
    raises is kept in ``errors`` (for the main thread) and stops the demo."""

    def follow() -> None:
        try:
            service.run(input_finished=scored.is_set)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            stop.set()

    return threading.Thread(target=follow, name=name)


def _alert_to_try(path: Path) -> tuple[int, str]:
    """The alerts in the store, and one worth a look: the first pump-and-dump stored, else
    the first alert ("" when there is none)."""
    with AlertStore.open(str(path), create=False) as store:
        first = store.query(types=["pump_and_dump"], newest_first=False, limit=1) or \
            store.query(newest_first=False, limit=1)
        return store.count(), first[0].alert_id if first else ""


def _remove_log(store: Path) -> None:
    """Delete the SQLite file at ``store`` and its side files (not a signing key)."""
    for path in (store, Path(f"{store}-wal"), Path(f"{store}-shm")):
        path.unlink(missing_ok=True)


class _Ticker(threading.Thread):
    def __init__(self, progress: Progress, stop: threading.Event) -> None:
        super().__init__(name="chainwatch-progress", daemon=True)
        self.progress, self.stop = progress, stop

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.progress.tick()
