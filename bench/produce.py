"""Producer throughput into the local broker, against the raw kafka-python rate of the same run.

    python bench/produce.py [--events 200000] [--repeat 2]

Prints events/s for (1) raw kafka-python sends of pre-encoded ~200-byte JSON records with
chainwatch's producer settings, (2) the synthetic chain, (3) a replay of the real
uniswap-v2-2021 events, and each one's ratio to the raw rate. The machine is shared and
noisy: compare the ratios, which are measured minutes apart on the same broker; each figure is
the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import clients  # noqa: E402
from pipeline.broker import LocalBroker  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.topics import ensure_topics  # noqa: E402
from producers.replay import Replayer, ReplayOptions  # noqa: E402
from producers.stream import produce_synth  # noqa: E402
from producers.synth import SynthConfig  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def fresh_settings(bootstrap: str) -> Settings:
    tag = uuid.uuid4().hex[:6]
    names = {f"topics__{role}": f"bench-{tag}-{role}" for role in Settings().topics.all()}
    settings = Settings.load(env={}).replace(bootstrap_servers=bootstrap, **names)
    ensure_topics(settings)
    return settings


def raw_rate(bootstrap: str, events: int) -> float:
    settings = fresh_settings(bootstrap)
    payload = (b'{"type":"dex_event","schema_version":1,"pool_address":"0x' + b"a" * 40
               + b'","kind":"sync","reserve0":"123456789012345678901234","reserve1":'
               b'"987654321098765432109876","block_number":13153696}')
    keys = [f"0x{i:040x}".encode() for i in range(1000)]
    producer = clients.producer(settings)
    started = time.perf_counter()
    for i in range(events):
        producer.send(settings.topics.dex, value=payload, key=keys[i % 1000])
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return events / elapsed


def synth_rate(bootstrap: str, events: int) -> float:
    settings = fresh_settings(bootstrap)
    blocks = max(10, events // 28)  # ~28 events per block at the default traffic
    summary = produce_synth(settings, SynthConfig(seed=1, blocks=blocks), progress=False)
    return summary.produced / summary.elapsed_s


def replay_rate(bootstrap: str, events: int) -> float:
    settings = fresh_settings(bootstrap)
    replayer = Replayer(settings, "uniswap-v2", DATA / "uniswap-v2-2021",
                        ReplayOptions(limit=events, progress=False))
    summary = replayer.run()
    return summary.records / summary.elapsed_s


def replay_memory(bootstrap: str) -> list[tuple[int, float, float]]:
    """Peak RSS (MiB) of the sending and the planner process, each run in a fresh process,
    for a short and for the full uniswap-v2 replay: equal peaks mean memory does not grow
    with the rows read."""
    peaks = []
    for rows in (50_000, 0):
        out = subprocess.run([sys.executable, __file__, "--memory-probe", str(rows),
                              "--bootstrap", bootstrap], capture_output=True, text=True,
                             check=True).stdout.split()
        peaks.append((int(out[0]), float(out[1]), float(out[2])))
    return peaks


def memory_probe(bootstrap: str, rows: int) -> None:
    import resource

    summary = Replayer(fresh_settings(bootstrap), "uniswap-v2", DATA / "uniswap-v2-2021",
                       ReplayOptions(limit=rows or None, progress=False)).run()
    sender = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    planner = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(summary.read, sender, planner)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe is not None:
        memory_probe(args.bootstrap, args.memory_probe)
        return
    print(f"chainwatch producer bench: {args.events:,} events per run, best of {args.repeat}, "
          f"{os.cpu_count()} CPUs", flush=True)
    with LocalBroker() as broker:
        results: dict[str, float] = {}
        for name, fn in (("raw kafka-python", raw_rate), ("synth", synth_rate),
                         ("replay uniswap-v2", replay_rate)):
            best = 0.0
            for _ in range(args.repeat):
                best = max(best, fn(broker.bootstrap, args.events))
            results[name] = best
            print(f"  {name:<20} {best:>10,.0f} events/s", flush=True)
        raw = results["raw kafka-python"]
        print("ratio to raw kafka-python in this run:")
        for name in ("synth", "replay uniswap-v2"):
            print(f"  {name:<20} {results[name] / raw:>10.0%}")
        print("peak RSS replaying uniswap-v2 (sender / planner process):", flush=True)
        for rows, sender, planner in replay_memory(broker.bootstrap):
            print(f"  {rows:>9,} rows {sender:>8.0f} MiB / {planner:.0f} MiB")


if __name__ == "__main__":
    main()
