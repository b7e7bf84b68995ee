"""Stream the synthetic chain into Kafka and write its ground truth."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.health import ServiceHealth
from pipeline.progress import Progress, eta, rate
from pipeline.records import ChainRecord
from pipeline.settings import Settings, Topics
from producers import handoff
from producers.handoff import Outbox
from producers.sink import message_for
from producers.synth import SynthConfig, SyntheticChain


@dataclass
class SynthSummary:
    seed: int
    blocks: int
    transactions: int = 0
    dex_events: int = 0
    campaigns: int = 0
    elapsed_s: float = 0.0
    truth_path: str | None = None

    @property
    def produced(self) -> int:
        return self.transactions + self.dex_events


def write_truth(path: Path, truth: list[dict[str, Any]]) -> None:
    """Ground truth as JSON lines, keys sorted: the same seed gives the same bytes.

    The file's directory must exist: chainwatch creates no directory nobody asked for, so a
    missing one raises ConfigError (as ``--truth`` does in the CLI)."""
    parent = path.parent
    if not parent.exists():
        raise ConfigError(f"truth file {path}: directory {parent} does not exist; create it "
                          "first")
    if not parent.is_dir():
        raise ConfigError(f"truth file {path}: {parent} is not a directory; give a file in an "
                          "existing directory")
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for campaign in truth:
            fh.write(json.dumps(campaign, sort_keys=True, separators=(",", ":")) + "\n")
    tmp.replace(path)


@dataclass(frozen=True)
class SynthJob:
    config: SynthConfig
    topics: Topics
    rate_per_s: float | None = None
    progress: bool = True


def produce_synth(settings: Settings, config: SynthConfig, truth_path: Path | None = None,
                  *, rate_per_s: float | None = None, progress: bool = True,
                  stop: threading.Event | None = None,
                  health: ServiceHealth | None = None) -> SynthSummary:
    """Stream ``config.blocks`` blocks; pace to ``rate_per_s`` events/s when given.

    The truth file is written first: campaigns are planned before any event is made. The
    chain is generated in a planner process (:mod:`producers.handoff`) and sent from here,
    which publishes its liveness and readiness to ``health``.
    """
    if truth_path is not None:
        write_truth(truth_path, SyntheticChain(config).truth)
    job = SynthJob(config, settings.topics, rate_per_s, progress)
    summary: SynthSummary = handoff.run(plan_synth, job, settings, stop=stop, stage="synth",
                                        linger_ms=2 if rate_per_s else None, health=health)
    summary.truth_path = str(truth_path) if truth_path else None
    return summary


def plan_synth(job: SynthJob, outbox: Outbox, stop: Event) -> SynthSummary:
    """The planner: generate blocks and encode their records; runs in the child process."""
    config, topics = job.config, job.topics
    chain = SyntheticChain(config)
    summary = SynthSummary(config.seed, config.blocks, campaigns=len(chain.campaigns))
    started = time.monotonic()
    blocks_done = 0
    status = Progress(lambda: (
        f"synth: block {blocks_done:,}/{config.blocks:,} "
        f"({100 * blocks_done // config.blocks}%) · {summary.produced:,} events · "
        f"{rate(summary.produced, time.monotonic() - started)} · ETA "
        f"{eta(blocks_done, config.blocks, time.monotonic() - started)}"),
        enabled=job.progress)
    for block in chain.blocks():
        if stop.is_set():
            break
        records: list[ChainRecord] = [*block.transactions, *block.dex_events]
        for record in records:
            topic, key, value = message_for(record, topics)
            outbox.send(topic, value=value, key=key)
        summary.transactions += len(block.transactions)
        summary.dex_events += len(block.dex_events)
        blocks_done += 1
        if job.rate_per_s:
            ahead = summary.produced / job.rate_per_s - (time.monotonic() - started)
            if ahead > 0:
                outbox.flush()
                stop.wait(ahead)
        status.tick()
    outbox.flush()
    summary.elapsed_s = time.monotonic() - started
    status.done()
    return summary
