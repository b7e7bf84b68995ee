"""Scorer throughput, latency and memory against the local broker.

    python bench/score.py [--events 200000] [--latency-seconds 20] [--memory-events 2000000]

1. throughput: one scorer process (every detector on, checkpoints on) reads N synthetic
   events already in Kafka; in the same run, a naive baseline — poll one message,
   json-decode, river HalfSpaceTrees score and learn one, produce an alert above a
   threshold — reads the same events. Prints both and the ratio.
2. latency: a producer writes at a fixed 2k events/s while the scorer runs; prints p50/p99
   of Kafka timestamp → scored for every event, and → alert sent for alerts.
3. memory: RSS of the scorer over a long run with many distinct addresses (fresh synthetic
   wallets keep arriving); prints the mean RSS of the first and last tenth and the change.

The machine is shared and noisy; compare the figures of one run with each other.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from river import anomaly, compose, preprocessing  # noqa: E402

from consumers.scorer import ScorerService  # noqa: E402
from pipeline import clients  # noqa: E402
from pipeline.broker import LocalBroker  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.topics import ensure_topics  # noqa: E402
from producers.campaigns import CAMPAIGN_TYPES  # noqa: E402
from producers.stream import produce_synth  # noqa: E402
from producers.synth import SynthConfig  # noqa: E402

EVENTS_PER_BLOCK = 28  # the synthetic chain's default traffic, roughly


def fresh_settings(bootstrap: str, tmp: Path) -> Settings:
    tag = uuid.uuid4().hex[:6]
    names = {f"topics__{role}": f"bench-{tag}-{role}" for role in Settings().topics.all()}
    settings = Settings.load(env={}).replace(
        bootstrap_servers=bootstrap, consumer_group=f"bench-{tag}",
        checkpoint_uri=str(tmp / tag), **names)
    ensure_topics(settings)
    return settings


def fill(settings: Settings, events: int, seed: int = 1, wallets: int = 5_000) -> int:
    config = SynthConfig(seed=seed, blocks=max(10, events // EVENTS_PER_BLOCK), wallets=wallets,
                         campaigns=dict.fromkeys(CAMPAIGN_TYPES, 4.0))
    return produce_synth(settings, config, progress=False).produced


def scorer_rate(settings: Settings, events: int) -> float:
    service = ScorerService(settings, session_timeout_ms=2000, heartbeat_interval_ms=500)
    first: list[float] = []
    service.on_scored = lambda _ts, _n: first.append(time.perf_counter()) if not first else None
    stats = service.run(input_finished=lambda: True)
    return stats.consumed / (time.perf_counter() - first[0])


def naive_rate(settings: Settings, events: int) -> float:
    """One message at a time: the way a first prototype is written."""
    consumer = clients.consumer(settings, settings.topics.transactions, settings.topics.dex,
                                group_id=f"naive-{uuid.uuid4().hex[:6]}", max_poll_records=1,
                                session_timeout_ms=2000, heartbeat_interval_ms=500)
    producer = clients.producer(settings, linger_ms=5)
    model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=1))
    seen, started = 0, 0.0
    while seen < events:
        for messages in consumer.poll(timeout_ms=1000, max_records=1).values():
            for msg in messages:
                if not started:
                    started = time.perf_counter()
                record = json.loads(msg.value)
                x = {k: float(v) for k, v in record.items()
                     if k in ("value", "gas", "gas_price", "amount0_in", "amount1_in",
                              "reserve0", "reserve1") and v is not None}
                score = model.score_one(x)
                model.learn_one(x)
                if score > 0.95:
                    producer.send(settings.topics.alerts, value=msg.value)
                seen += 1
    elapsed = time.perf_counter() - started
    producer.close()
    consumer.close()
    return seen / elapsed


def latency(settings: Settings, seconds: float) -> tuple[list[float], list[float]]:
    """Event → scored and event → alert latencies (ms) with a producer at 2k events/s."""
    scored: list[float] = []
    alerted: list[float] = []

    def on_scored(timestamp_ms: int, alerts: int) -> None:
        lag = time.time() * 1000 - timestamp_ms
        scored.append(lag)
        alerted.extend([lag] * alerts)

    stop = threading.Event()
    service = ScorerService(settings, stop, session_timeout_ms=2000, heartbeat_interval_ms=500)
    service.on_scored = on_scored
    runner = threading.Thread(target=service.run)
    runner.start()
    time.sleep(3)  # the group join
    config = SynthConfig(seed=3, blocks=int(seconds * 2000 / EVENTS_PER_BLOCK),
                         campaigns=dict.fromkeys(CAMPAIGN_TYPES, 20.0))
    produce_synth(settings, config, rate_per_s=2000, progress=False)
    time.sleep(2)
    stop.set()
    runner.join()
    return scored, alerted


def memory(bootstrap: str, tmp: Path, events: int) -> list[tuple[int, float]]:
    """(events scored, RSS MiB) samples of a scorer over a long run of distinct addresses."""
    settings = fresh_settings(bootstrap, tmp)
    samples: list[tuple[int, float]] = []
    service = ScorerService(settings, session_timeout_ms=2000, heartbeat_interval_ms=500)
    count = [0]

    def on_scored(_ts: int, _n: int) -> None:
        count[0] += 1
        if count[0] % 10_000 == 0:
            samples.append((count[0], _rss_mib()))

    service.on_scored = on_scored
    producer = threading.Thread(target=fill, args=(settings, events, 5, 2_000_000))
    producer.start()
    done = threading.Event()
    runner = threading.Thread(target=lambda: (service.run(input_finished=done.is_set)))
    runner.start()
    producer.join()
    done.set()
    runner.join()
    return samples


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def _quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return f"n={len(values)}"
    q = statistics.quantiles(values, n=100)
    return f"p50 {q[49]:.1f} ms · p99 {q[98]:.1f} ms · n={len(values):,}"


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--memory-events", type=int, default=2_000_000)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        settings = fresh_settings(broker.bootstrap, tmp)
        produced = fill(settings, args.events)
        print(f"chainwatch scorer bench: {produced:,} synthetic events in Kafka", flush=True)
        results["scorer"] = scorer_rate(settings, produced)
        print(f"  scorer (every detector)  {results['scorer']:>10,.0f} events/s", flush=True)
        naive_events = min(produced, 30_000)
        results["naive"] = naive_rate(settings, naive_events)
        print(f"  naive baseline           {results['naive']:>10,.0f} events/s "
              f"(first {naive_events:,} events)", flush=True)
        print(f"  ratio                    {results['scorer'] / results['naive']:>10.1f}x")
        scored, alerted = latency(fresh_settings(broker.bootstrap, tmp), args.latency_seconds)
        print(f"latency at 2,000 events/s for {args.latency_seconds:.0f} s:")
        print(f"  event → scored  {_quantiles(scored)}")
        print(f"  event → alert   {_quantiles(alerted)}", flush=True)
        if args.memory_events:
            samples = memory(broker.bootstrap, tmp, args.memory_events)
            tenth = max(len(samples) // 10, 1)
            first = statistics.mean(r for _, r in samples[:tenth])
            last = statistics.mean(r for _, r in samples[-tenth:])
            print(f"memory over {samples[-1][0]:,} events with up to 2M distinct wallets:")
            print(f"  RSS first tenth {first:.0f} MiB · last tenth {last:.0f} MiB · "
                  f"change {100 * (last - first) / first:+.1f} %")


if __name__ == "__main__":
    main()
