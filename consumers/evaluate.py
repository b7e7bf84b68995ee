"""``chainwatch evaluate``: run a labelled source through the real pipeline and grade it.

The source goes into Kafka (a local broker unless one is given), the scorer service scores
it as in production (consumer group, tasks, checkpoints), and the alerts read back from the
alerts topic are compared with the ground truth by :mod:`pipeline.evaluation`:

* ``synth``: the synthetic chain's campaigns — per type precision, recall, F1, delays;
* ``blte``: the BLTE labels — prequential ROC-AUC and PR-AUC of the supervised model, each
  labelled transaction scored in stream time (by the model holding every label released
  before its block, see :mod:`pipeline.detectors.supervised`), before it learns its label;
* ``uniswap-v2``: liquidity drains and price crashes found in the replayed pool data itself
  (:func:`pipeline.evaluation.crash_events`), against the rug-pull alerts: ``by_type`` on
  all events, ``rug_pull_by_event_kind`` on drains alone and on price crashes alone (the
  precision there is the share of *all* rug-pull alerts that match an event of that kind),
  and ``rug_pull_alerts_without_priced_weth``, the rug-pull alerts on pools that never had
  a WETH side with reserves (which should be 0); and, when the settings have a rule named
  ``rug_risk``, every score it gave, graded per pool by :mod:`pipeline.risk_evaluation`
  (ROC-AUC and PR-AUC by pool age and before the event, alert shares and lead times, in a
  ``tune`` and a ``report`` half), with ``healthy_tokens.csv`` of the dataset folder as the
  known-legitimate tokens;
* ``pumps``: the pump-telegram-binance folder (``trades.parquet``, ``pumps.csv``) replayed as
  trades with the announcements as delayed labels, scored while the replay runs; the
  ``pump_and_dump`` alerts and every score that rule gave (as the highest per 5, 15 and 25 s
  chunk of each stream) are graded by :mod:`pipeline.pump_evaluation` (per pump: detected,
  delay from the first pump trade, before the peak; false alerts in the 48 h lead-ins; La
  Morgia's chunk precision, recall and F1), in a ``tune`` and a ``report`` half.

The report directory gets ``summary.json``, plots, ``report.html``, ``alerts.jsonl`` and the
run's alert store ``alerts.db`` (the alert sink's, for ``chainwatch alerts list --store``);
``pumps`` adds ``pumps.csv``.
"""

from __future__ import annotations

import csv
import functools
import multiprocessing as mp
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from kafka import TopicPartition

from consumers.alert_sink import AlertSinkService
from consumers.pump_report import write_pump_report
from consumers.report import RiskReport, Timeline, write_report
from consumers.scorer import ScorerService
from consumers.tasks import TaskManager
from pipeline import clients, codec
from pipeline.alerts import Alert
from pipeline.broker import LocalBroker
from pipeline.errors import ChainwatchError
from pipeline.evaluation import (
    alert_block,
    average_precision,
    crash_events,
    evaluate_events,
    evaluate_synthetic,
    roc_auc,
)
from pipeline.features.pools import WETH
from pipeline.progress import Progress, rate
from pipeline.pump_evaluation import (
    CHUNK_SIZES_S,
    add_chunk_scores,
    evaluate_pumps,
    split_pumps,
)
from pipeline.records import ChainRecord, DexEvent, Label
from pipeline.risk_evaluation import evaluate_risk, first_alerts, pool_outcomes, priced_weth_pools
from pipeline.rules import Rule, RuleSet
from pipeline.scoring import Scorer
from pipeline.settings import Settings
from pipeline.topics import ensure_topics
from producers.campaigns import CAMPAIGN_TYPES
from producers.replay import Replayer, ReplayOptions
from producers.stream import produce_synth
from producers.synth import SynthConfig, SyntheticChain

SOURCES = ("synth", "blte", "uniswap-v2", "pumps")
LABEL_DELAY_BLOCKS = 5760  # about a day: when a replayed label is released in stream time


PUMP_RULE = "pump_and_dump"
"""The trades rule whose every score the ``pumps`` evaluation records, by chunk."""
PUMP_LABEL_DELAY_S = 3600  # a pump's announcement is known an hour after it

RISK_RULE = "rug_risk"
"""The rule whose every score the ``uniswap-v2`` evaluation records and grades
(:mod:`pipeline.risk_evaluation`); without such a rule the summary has no ``rug_risk``."""


class RecordingScorer(Scorer):
    """A Scorer that keeps the supervised model's prequential (score, label) pairs, every
    score of the rule named ``risk_rule`` (when it has one) and counts the labels it is given,
    until a :class:`PrequentialLog` drains them."""

    def __init__(self, seed: int = 42, rules: RuleSet | None = None,
                 risk_rule: str = RISK_RULE) -> None:
        super().__init__(seed, rules)
        self.transactions.supervised.test_log = []
        self.labels_read = 0
        self.risk_rule: Rule | None = next((r for r in self.rules if r.name == risk_rule),
                                           None)
        if self.risk_rule is not None:
            self.risk_rule.score_log = []
        self.pump_rule: Rule | None = next((r for r in self.trades.rules if r.name == PUMP_RULE),
                                           None)
        if self.pump_rule is not None:
            self.pump_rule.score_log = []

    def process(self, record: ChainRecord, source: dict[str, Any]) -> list[Alert]:
        self.labels_read += isinstance(record, Label)
        return super().process(record, source)


@dataclass
class PrequentialLog:
    """What the RecordingScorers of one evaluation recorded, drained after every record.

    Draining after every record (:meth:`collect`, from the service's ``on_scored`` hook)
    leaves the Scorers' own logs empty whenever they are checkpointed, so checkpoints carry
    none of it, and a Scorer restored from a checkpoint records on from where it was drained.
    """

    pairs: list[tuple[float, int]] = field(default_factory=list)
    labels: int = 0
    risk_scores: list[tuple[str, int, float]] = field(default_factory=list)
    risk_rule: str | None = None  # the name of the rule risk_scores come from, if any
    # chunk size (s) -> (stream, chunk index) -> the highest pump_and_dump score in it
    pump_chunks: dict[int, dict[tuple[str, int], float]] = field(
        default_factory=lambda: {size: {} for size in CHUNK_SIZES_S})

    def collect(self, tasks: TaskManager | None) -> None:
        for task in tasks.tasks.values() if tasks is not None else ():
            scorer = task.scorer
            if not isinstance(scorer, RecordingScorer):
                continue
            self.labels += scorer.labels_read
            scorer.labels_read = 0
            log = scorer.transactions.supervised.test_log
            if log:
                self.pairs.extend(log)
                log.clear()
            rule = scorer.risk_rule
            if rule is not None and rule.score_log is not None:
                self.risk_rule = rule.name
                self.risk_scores.extend(rule.score_log)
                rule.score_log.clear()
            pump = scorer.pump_rule
            if pump is not None and pump.score_log:
                add_chunk_scores(self.pump_chunks, pump.score_log)
                pump.score_log.clear()


@dataclass(frozen=True)
class EvalSource:
    kind: str  # synth | blte | uniswap-v2 | pumps
    path: Path | None = None
    seed: int = 100
    blocks: int = 3000
    difficulty: float = 0.5
    limit: int | None = None


def run_evaluation(settings: Settings, source: EvalSource, out: Path, *,
                   bootstrap: str | None = None, progress: bool = True,
                   stop: threading.Event | None = None) -> dict[str, Any]:
    """Produce, score, grade; write the report to ``out`` and return the summary."""
    stop = stop or threading.Event()
    rules = RuleSet.load(settings.detectors)  # a bad rule fails here, before the broker starts
    recorded = PrequentialLog()
    with _broker(bootstrap) as address, tempfile.TemporaryDirectory(prefix="cw-eval-") as tmp:
        settings = settings.replace(bootstrap_servers=address,
                                    checkpoint_uri=str(Path(tmp) / "checkpoints"),
                                    checkpoint_key_file=str(Path(tmp) / "checkpoint.key"),
                                    consumer_group=f"chainwatch-evaluate-{time.time_ns()}")
        ensure_topics(settings)
        started = time.monotonic()
        service = ScorerService(settings, stop,
                                scorer_factory=functools.partial(RecordingScorer, rules=rules),
                                session_timeout_ms=2000, heartbeat_interval_ms=500)
        produced = 0
        status = Progress(lambda: f"evaluate: scored {service.stats.consumed:,}/"
                          f"{produced or '…'} events · "
                          f"{rate(service.stats.consumed, status.elapsed)}", enabled=progress)

        def on_scored(_timestamp: int, _alerts: int) -> None:
            recorded.collect(service.tasks)
            status.tick()

        service.on_scored = on_scored
        if source.kind == "pumps":  # replay and score at once: the end-to-end rate
            truth, produced, stats = _produce_while_scoring(settings, source, service, stop)
        else:
            truth, produced = _produce(settings, source, progress, stop)
            stats = service.run(input_finished=lambda: True)
        status.done()
        produced_and_scored_s = time.monotonic() - started  # before reading back and storing
        alerts = read_alerts(settings, sum(stats.alerts_by_type.values()))
        stored = _store_alerts(settings, out)
        dex = _read_dex(settings) if source.kind not in ("blte", "pumps") else []
        summary: dict[str, Any] = {"source": source.kind, "events": stats.consumed,
                                   "dead_lettered": stats.dead_lettered,
                                   "alerts_by_type": dict(sorted(stats.alerts_by_type.items())),
                                   "alert_store": str(out / ALERT_STORE),
                                   "alerts_stored": stored,
                                   "elapsed_s": round(time.monotonic() - started, 1),
                                   "produced_and_scored_s": round(produced_and_scored_s, 1)}
    if source.kind == "synth":
        summary |= {"seed": source.seed, "blocks": source.blocks,
                    "difficulty": source.difficulty}
        report = evaluate_synthetic(alerts, truth, stats.consumed)
        summary["by_type"] = {k: headline(k, v) for k, v in report.items()}
        summary["detail"] = report
        write_report(out, f"chainwatch evaluation: synthetic seed {source.seed}", summary,
                     alerts=alerts, campaign_scored=_scored_alerts(alerts, report),
                     delays=_delays(report), timelines=_timelines(truth, dex, alerts),
                     hits=[h for metrics in report.values() for h in metrics.get("hits", [])])
    elif source.kind == "pumps":
        assert source.path is not None
        summary |= _pumps(out, source.path, alerts, recorded=recorded, rules=rules,
                          run=summary)
    elif source.kind == "blte":
        pairs = recorded.pairs
        # a label released after the last transaction of its partition is never applied, and
        # one whose transaction was no longer pending is not tested: labels - labels_tested
        summary["supervised"] = {"label_delay_blocks": LABEL_DELAY_BLOCKS,
                                 "models": settings.partitions.transactions,  # one per task
                                 "labels": recorded.labels, "labels_tested": len(pairs),
                                 "positives": sum(label for _, label in pairs),
                                 "roc_auc": roc_auc(pairs), "pr_auc": average_precision(pairs)}
        write_report(out, "chainwatch evaluation: BLTE labelled transactions", summary,
                     alerts=alerts, scored={"supervised (prequential)": pairs})
    else:
        crashes = crash_events(dex)
        summary["crashes"] = {"definition": "WETH reserve or price at least 90 % below its "
                              "running peak, recovering to no more than 20 % of it",
                              "count": len(crashes)}
        summary["by_type"] = {"rug_pull": evaluate_events(alerts, crashes)}
        summary["rug_pull_by_event_kind"] = {
            kind: evaluate_events(alerts, [c for c in crashes if c.kind == kind])
            for kind in ("liquidity_drain", "price_crash")}
        priced = priced_weth_pools(dex)
        summary["rug_pull_alerts_without_priced_weth"] = sum(
            1 for a in alerts if a.type == "rug_pull" and a.subject not in priced)
        risk = _risk(summary, recorded, dex, alerts, source.path)
        write_report(out, "chainwatch evaluation: Uniswap-V2 2021 replay", summary,
                     alerts=alerts, risk=risk, event_delays={
                         "rug_pull": summary["by_type"]["rug_pull"]["delays_vs_event"]})
    return summary


def read_healthy_tokens(folder: Path | None) -> set[str]:
    """The token addresses (lower case) of ``healthy_tokens.csv`` in a dataset folder; none
    when the folder has no such file."""
    path = folder / "healthy_tokens.csv" if folder is not None else None
    if path is None or not path.is_file():
        return set()
    with path.open(newline="", encoding="utf-8") as f:
        return {row["token_address"].strip().lower() for row in csv.DictReader(f)
                if row.get("token_address")}


TIMELINE_POOLS = 2  # per group (caught, missed, falsely flagged), the first by pool address
REPORT_HALF = "report"


def _risk(summary: dict[str, Any], recorded: PrequentialLog, dex: list[DexEvent],
          alerts: list[Alert], folder: Path | None) -> RiskReport | None:
    """The ``rug_risk`` section of the summary and what its plots need; None (and a note in
    the summary) when no rule of that name scored."""
    if recorded.risk_rule is None:
        summary["rug_risk_note"] = (f"no rule named {RISK_RULE} is configured: no "
                                    f"{RISK_RULE} figures")
        return None
    name = recorded.risk_rule
    outcomes = pool_outcomes(dex, read_healthy_tokens(folder))
    flagged = [(a.subject, alert_block(a)) for a in alerts if a.type == name]
    stream_end = max((e.block_number for e in dex), default=0)
    result = evaluate_risk(outcomes, recorded.risk_scores, flagged, stream_end)
    summary[RISK_RULE] = {"rule": name, "report_half": REPORT_HALF} | result.summary
    half = REPORT_HALF
    roc = {f"age {k}": v for k, v in result.age_pairs[half].items()} | \
        {f"{k} before the event": v for k, v in result.before_pairs[half].items()}
    first = first_alerts(flagged)
    shown = [o for o in outcomes.values() if o.universe and o.split == half]
    caught = [o for o in shown if o.event_block is not None
              and first.get(o.pool, o.event_block) < o.event_block]
    missed = [o for o in shown if o.event_block is not None and o not in caught]
    false = [o for o in shown if o.event_block is None and o.pool in first]
    timelines = []
    decimals = read_decimals(folder)
    for group, members in (("caught", caught), ("missed", missed), ("falsely flagged", false)):
        for o in sorted(members, key=lambda o: o.pool)[:TIMELINE_POOLS]:
            phases = {o.event_kind: o.event_block} if o.event_kind and o.event_block else {}
            timelines.append(_pool_timeline(f"{name} {group}: {o.pool}", o.pool, dex, alerts,
                                            phases=phases, types=(name, "rug_pull"),
                                            decimals=decimals))
    return RiskReport(rule=name, half=half, roc=roc,
                      lead_blocks=result.summary[half]["alerts"]["lead_blocks"],
                      timelines=timelines)


def read_decimals(folder: Path | None) -> dict[str, int]:
    """Token decimals (lower-case address -> decimals) of ``decimals.csv`` in a dataset
    folder; none when the folder has no such file."""
    path = folder / "decimals.csv" if folder is not None else None
    if path is None or not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {row["token_address"].strip().lower(): int(row["decimals"])
                for row in csv.DictReader(f) if row.get("token_address") and row.get("decimals")}


def _pool_timeline(title: str, pool: str, dex: list[DexEvent], alerts: list[Alert], *,
                   phases: dict[str, int], types: tuple[str, ...],
                   decimals: dict[str, int]) -> Timeline:
    """WETH reserve and price (WETH per whole token, by ``decimals``, 18 if unknown) of one
    pool over its whole replay, with its alerts of ``types``."""
    timeline = Timeline(title, phases=phases, price_label="price (WETH per token)")
    for ev in dex:
        if ev.pool_address == pool and ev.reserve0 and ev.reserve1:
            weth_is_0 = ev.token0 == WETH
            weth, token = (ev.reserve0, ev.reserve1) if weth_is_0 else (ev.reserve1, ev.reserve0)
            scale = 10 ** decimals.get(ev.token1 if weth_is_0 else ev.token0, 18)
            timeline.blocks.append(ev.block_number)
            timeline.prices.append((weth / 1e18) / (token / scale))
            timeline.liquidity.append(weth / 1e18)
    timeline.alerts = sorted((alert_block(a), a.type) for a in alerts
                             if a.subject == pool and a.type in types)
    return timeline


DELAY_REFERENCE = {"pump_and_dump": "median_delay_from_onset",  # blocks after the pump began
                   "rug_pull": "median_delay_vs_move"}  # blocks after the drain (< 0: before)


def headline(kind: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures people look at first; the delay is from the type's reference phase."""
    reference = DELAY_REFERENCE.get(kind, "median_delay_from_start")
    return {"precision": metrics.get("precision"), "recall": metrics.get("recall"),
            "f1": metrics.get("f1"), "median_delay_blocks": metrics.get(reference),
            "delay_reference": reference.removeprefix("median_delay_"),
            "median_delay_vs_move": metrics.get("median_delay_vs_move"),
            "before_move_share": metrics.get("before_move_share"),
            "alerts": metrics.get("alerts"), "campaigns": metrics.get("campaigns")}


@contextmanager
def _broker(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    with LocalBroker() as broker:
        yield broker.bootstrap


def _produce_while_scoring(settings: Settings, source: EvalSource, service: ScorerService,
                           stop: threading.Event) -> tuple[list[dict[str, Any]], int, Any]:
    """Replay the trades from a child process (its own interpreter: the sender does not share
    this one's GIL with the scorer) while the scorer service consumes them; the service stops
    once the replay is done and it has caught up."""
    assert source.path is not None
    ctx = mp.get_context("spawn")
    halt, results = ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_replay_main, name="chainwatch-evaluate-replay",
                        args=(settings, source.path, source.limit, halt, results))
    child.start()
    result: dict[str, Any] = {}

    def finished() -> bool:
        if stop.is_set():
            halt.set()
        if not result and (not results.empty() or not child.is_alive()):
            try:
                result["outcome"] = results.get(timeout=5)
            except queue.Empty:
                result["outcome"] = ChainwatchError(
                    f"the replay process ended with exit code {child.exitcode} and no summary")
        return bool(result)

    try:
        stats = service.run(input_finished=finished)
    finally:
        halt.set()
        child.join(timeout=30)
    outcome = result.get("outcome")
    if outcome is None:  # the service stopped first (a signal)
        raise ChainwatchError("the evaluation was stopped before the replay finished")
    if isinstance(outcome, BaseException):
        raise outcome
    return [], outcome.records + outcome.labels, stats


def _replay_main(settings: Settings, path: Path, limit: int | None, halt: Any,
                 results: Any) -> None:
    """The replay child: replay the trades folder, put its summary (or its error) on
    ``results``."""
    try:
        summary: Any = Replayer(settings, "trades", path,
                                ReplayOptions(limit=limit, progress=False, labels_ahead=True),
                                label_delay_s=PUMP_LABEL_DELAY_S, stop=halt).run()
    except Exception as exc:  # reported by the parent, which raises it
        summary = ChainwatchError(f"replaying {path} failed: {type(exc).__name__}: {exc}")
    results.put(summary)


def _pumps(out: Path, folder: Path, alerts: list[Alert], *, recorded: PrequentialLog,
           rules: RuleSet, run: dict[str, Any]) -> dict[str, Any]:
    """Grade the pump_and_dump alerts on the pump folder, write its report; the summary
    fields to add."""
    trades = pd.read_parquet(folder / "trades.parquet",
                             columns=["pump_id", "timestamp_ms", "side", "price", "amount",
                                      "quote_volume"])
    pumps = pd.read_csv(folder / "pumps.csv")
    tune, _ = split_pumps(pumps)
    spec = next((s for s in rules.specs if s.name == PUMP_RULE), None)
    threshold = spec.threshold if spec is not None and spec.threshold is not None else 0.5
    pump_alerts = sorted((a.subject, int(a.evidence.get("timestamp_ms", a.event_time * 1000)),
                          a.score, a.alert_id) for a in alerts if a.type == PUMP_RULE)
    graded = evaluate_pumps(trades, pumps, pump_alerts, recorded.pump_chunks, threshold, tune)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "alerts.jsonl").open("wb") as f:
        for alert in sorted(alerts, key=lambda a: (a.event_time, a.alert_id)):
            f.write(alert.to_json() + b"\n")
    elapsed = run["produced_and_scored_s"] or 1e-9  # replay and scoring, not the read-back
    extra = {"rule": PUMP_RULE, "threshold": threshold,
             "label_delay_s": PUMP_LABEL_DELAY_S, "trades": len(trades),
             "end_to_end_trades_per_s": round(len(trades) / elapsed),
             "tune_pumps": sorted(tune)} | graded
    write_pump_report(out, run | extra, trades, pumps, pump_alerts)
    return extra


def _produce(settings: Settings, source: EvalSource, progress: bool,
             stop: threading.Event) -> tuple[list[dict[str, Any]], int]:
    if source.kind == "synth":
        config = SynthConfig(seed=source.seed, blocks=source.blocks,
                             difficulty=source.difficulty,
                             campaigns=dict.fromkeys(CAMPAIGN_TYPES, 4.0))
        summary = produce_synth(settings, config, progress=progress, stop=stop)
        return SyntheticChain(config).truth, summary.produced
    assert source.path is not None
    replay = Replayer(settings, source.kind, source.path,
                      ReplayOptions(limit=source.limit, progress=progress),
                      label_delay_blocks=LABEL_DELAY_BLOCKS, stop=stop).run()
    return [], replay.records + replay.labels  # labels are consumed and counted too


ALERT_STORE = "alerts.db"
"""The alert store an evaluation leaves in its report directory (``chainwatch alerts list
--store DIR/alerts.db``)."""


def _store_alerts(settings: Settings, out: Path) -> int:
    """Run the alert sink over the run's alerts topic into a fresh ``out/alerts.db``, with
    each alert's records (waiting up to 120 s for them: the run's broker goes with it); the
    number of alerts stored."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / ALERT_STORE
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)  # its offsets were for another run's broker
    sink = AlertSinkService(settings.replace(alerts__store=str(path)), context_drain_s=120.0)
    return sink.run(input_finished=lambda: True).stored


def read_alerts(settings: Settings, expected: int) -> list[Alert]:
    return [Alert.from_json(v) for v in _read(settings, settings.topics.alerts, expected)]


def _read_dex(settings: Settings) -> list[DexEvent]:
    events = []
    for value in _read(settings, settings.topics.dex, None):
        record = codec.decode(value)
        if isinstance(record, DexEvent):
            events.append(record)
    events.sort(key=lambda e: (e.block_number, e.log_index))
    return events


def _read(settings: Settings, topic: str, expected: int | None) -> list[bytes]:
    """Every value on ``topic`` (assign, read to the high-water mark)."""
    consumer = clients.consumer(settings, group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        idle = 0
        while idle < 5 and (expected is None or len(values) < expected):
            batch = consumer.poll(timeout_ms=300, max_records=50_000)
            idle = 0 if batch else idle + 1
            for messages in batch.values():
                values.extend(m.value for m in messages)
            if expected is None and all(
                    consumer.highwater(tp) is not None
                    and consumer.position(tp) >= consumer.highwater(tp) for tp in partitions):
                break
        return values
    finally:
        consumer.close()


def _scored_alerts(alerts: list[Alert], report: dict[str, Any]
                   ) -> dict[str, tuple[list[tuple[float, str | None]], int]]:
    """Per alert type with campaigns: (score, the campaign it matched or None) of each of its
    alerts, and the number of campaigns: precision-recall as the table counts it."""
    matched = {aid: hit["campaign_id"] for metrics in report.values()
               for hit in metrics.get("hits", []) for aid in hit.get("alert_ids", [])}
    out: dict[str, tuple[list[tuple[float, str | None]], int]] = {}
    for kind, metrics in report.items():
        if metrics.get("campaigns"):
            out[kind] = ([(a.score, matched.get(a.alert_id)) for a in alerts if a.type == kind],
                         metrics["campaigns"])
    return out


def _delays(report: dict[str, Any]) -> dict[str, list[int]]:
    """Each detected campaign's delay from its type's reference phase: the table's median
    is the median of these (see :data:`DELAY_REFERENCE`)."""
    out: dict[str, list[int]] = {}
    for kind, metrics in report.items():
        key = DELAY_REFERENCE.get(kind, "median_delay_from_start").removeprefix("median_")
        out[kind] = [h[key] for h in metrics.get("hits", []) if h["detected"] and key in h]
    return out


def _timelines(truth: list[dict[str, Any]], dex: list[DexEvent],
               alerts: list[Alert]) -> list[Timeline]:
    """Price and liquidity around the first pump-and-dump and rug pull campaigns."""
    picked = [next((c for c in truth if c["type"] == kind), None)
              for kind in ("pump_and_dump", "rug_pull")]
    out = []
    for campaign in filter(None, picked):
        pool, lo, hi = campaign["subject"], campaign["start_block"] - 30, campaign["end_block"] + 30
        timeline = Timeline(f"{campaign['type']} {campaign['campaign_id']} on {pool[:10]}…",
                            phases=dict(campaign["phases"]))
        for ev in dex:
            if ev.pool_address == pool and lo <= ev.block_number <= hi and ev.reserve0:
                weth, token = ((ev.reserve0, ev.reserve1) if ev.token0 == WETH
                               else (ev.reserve1, ev.reserve0))
                timeline.blocks.append(ev.block_number)
                timeline.prices.append(weth / token if token else 0.0)
                timeline.liquidity.append(weth / 1e18)
        timeline.alerts = [(alert_block(a), a.type) for a in alerts
                           if a.subject == pool and lo <= alert_block(a) <= hi]
        out.append(timeline)
    return out
