"""Stream the synthetic chain into Kafka and write its ground truth."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.progress import Progress, rate
from pipeline.settings import Settings
from producers.sink import KafkaSink
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
    """Ground truth as JSON lines, keys sorted: the same seed gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for campaign in truth:
            fh.write(json.dumps(campaign, sort_keys=True, separators=(",", ":")) + "\n")
    tmp.replace(path)


def produce_synth(settings: Settings, config: SynthConfig, truth_path: Path | None = None,
                  *, rate_per_s: float | None = None, progress: bool = True,
                  stop: threading.Event | None = None) -> SynthSummary:
    """Stream ``config.blocks`` blocks; pace to ``rate_per_s`` events/s when given."""
    stop = stop or threading.Event()
    chain = SyntheticChain(config)
    summary = SynthSummary(config.seed, config.blocks, campaigns=len(chain.campaigns))
    if truth_path is not None:
        write_truth(truth_path, chain.truth)  # planned up front: known before any event
        summary.truth_path = str(truth_path)
    started = time.monotonic()
    status = Progress(lambda: (
        f"synth: block {blocks_done:,}/{config.blocks:,} · {summary.produced:,} events · "
        f"{rate(summary.produced, time.monotonic() - started)}"), enabled=progress)
    blocks_done = 0
    with KafkaSink(settings) as sink:
        for block in chain.blocks():
            if stop.is_set():
                break
            for tx in block.transactions:
                sink.write(tx)
            for ev in block.dex_events:
                sink.write(ev)
            summary.transactions += len(block.transactions)
            summary.dex_events += len(block.dex_events)
            blocks_done += 1
            if rate_per_s:
                ahead = summary.produced / rate_per_s - (time.monotonic() - started)
                if ahead > 0:
                    stop.wait(ahead)
            status.tick()
    summary.elapsed_s = time.monotonic() - started
    status.done()
    return summary
