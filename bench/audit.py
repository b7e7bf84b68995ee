"""Audit log: batched append rate, proof sizes and times, full verification (not a test).

    python bench/audit.py [--leaves 1000000] [--batch 1000] [--proofs 500] [--dir DIR]

1. appends: ``--leaves`` synthetic alert leaves go into a fresh SQLite log in batches of
   ``--batch``, one transaction (WAL, synchronous=FULL) and one signed head per batch. The
   leaves are built batch by batch outside the timed part, as an auditor gets them from
   Kafka. Prints leaves/s (wall clock) overall and over the last tenth (the rate once the
   log is big), and leaves per CPU second of this process (what a busy machine leaves of
   the wall-clock rate; it leaves out the waits for fsync).
2. proofs at the final size n: for ``--proofs`` random leaves and random old sizes,
   inclusion and consistency proofs: size in bytes against the goal 32·⌈log2 n⌉, time to
   build one from the store, and time to check one, with the bare RFC 9162 algorithm and
   with the signed head (Ed25519) as a client does.
3. verify_store over the whole file: leaves/s.

The machine is shared and noisy: take the figures of one run together.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.alerts import Alert  # noqa: E402
from pipeline.audit import (  # noqa: E402
    AuditLog,
    Leaf,
    verify_consistency,
    verify_consistency_path,
    verify_inclusion,
    verify_inclusion_path,
    verify_store,
)
from pipeline.progress import Progress, eta, rate  # noqa: E402


def alert_leaf(i: int) -> Leaf:
    """A realistic alert (~600 bytes of JSON), distinct for every ``i``."""
    subject = f"0x{i:040x}"
    return Leaf.from_alert(Alert.build(
        type="pump_and_dump", severity="high", score=0.91, subject=subject,
        detector="pump_phase", model_version="1",
        evidence={"return_10": 0.41, "volume_z": 6.2, "buyers": 37, "threshold": 0.3},
        source={"topic": "chain.dex", "partition": i % 4, "offset": i,
                "item_ids": [f"log_0x{i:064x}_{i % 7}"]},
        event_time=1_700_000_000 + i, detected_at=1_700_000_012 + i,
        addresses=(subject, f"0x{i + 1:040x}")))


def appends(path: Path, leaves: int, batch: int) -> tuple[float, float, float]:
    """Overall leaves/s, leaves/s over the last tenth, and leaves per CPU second."""
    done, timed, cpu = 0, 0.0, 0.0
    tail_start = leaves - leaves // 10
    tail_done, tail_timed = 0, 0.0
    progress = Progress(lambda: f"  appended {done:,}/{leaves:,} "
                                f"{rate(done, timed)} eta {eta(done, leaves, progress.elapsed)}")
    with AuditLog.open(path) as log:
        while done < leaves:
            chunk = [alert_leaf(i) for i in range(done, min(done + batch, leaves))]
            started, started_cpu = time.perf_counter(), time.process_time()
            log.append(chunk, {("chainwatch.alerts", 0): done + len(chunk)})
            elapsed = time.perf_counter() - started
            timed += elapsed
            cpu += time.process_time() - started_cpu
            if done >= tail_start:
                tail_done += len(chunk)
                tail_timed += elapsed
            done += len(chunk)
            progress.tick()
    progress.done()
    return done / timed, tail_done / tail_timed, done / cpu


def timed(call: Callable[[], object], repeat: int) -> float:
    """Median seconds of one call."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@dataclass
class Figures:
    sizes: list[int] = field(default_factory=list)
    build: list[float] = field(default_factory=list)
    check: list[float] = field(default_factory=list)
    check_signed: list[float] = field(default_factory=list)

    def report(self, kind: str, goal: int) -> None:
        def ms(values: list[float]) -> str:
            return f"{1000 * statistics.median(values):.3f} ms"

        verdict = "within" if max(self.sizes) <= goal else "OVER"
        print(f"  {kind:<12} size mean {statistics.mean(self.sizes):.0f} B, max "
              f"{max(self.sizes)} B ({verdict} the goal) · build {ms(self.build)} · check "
              f"{ms(self.check)} (path) / {ms(self.check_signed)} (with the signed head) · "
              f"medians of {len(self.sizes)}")


def proofs(path: Path, count: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with AuditLog.open(path) as log:
        head = log.head
        assert head is not None
        n, key, old_heads = head.size, log.public_key, log.heads()[:-1] or [head]
        goal = 32 * math.ceil(math.log2(n)) if n > 1 else 0
        print(f"proofs at n = {n:,} (goal: 32·⌈log2 n⌉ = {goal} bytes):")
        inclusion = Figures()
        for _ in range(count):
            index = rng.randrange(n)
            inclusion.build.append(timed(partial(log.inclusion_proof, index), 3))
            proof, leaf = log.inclusion_proof(index), log.leaf(index)
            assert verify_inclusion(key, head, leaf, proof)
            inclusion.sizes.append(32 * len(proof.path))
            inclusion.check.append(timed(partial(verify_inclusion_path, leaf.hash, proof.index,
                                                 proof.size, proof.path, head.root), 5))
            inclusion.check_signed.append(timed(partial(verify_inclusion, key, head, leaf,
                                                        proof), 3))
        inclusion.report("inclusion", goal)
        consistency = Figures()
        for _ in range(count):
            old = rng.choice(old_heads)
            consistency.build.append(timed(partial(log.consistency_proof, old.size), 3))
            extension = log.consistency_proof(old.size)
            assert verify_consistency(key, old, head, extension)
            consistency.sizes.append(32 * len(extension.path))
            consistency.check.append(timed(partial(
                verify_consistency_path, extension.old_size, extension.new_size,
                extension.path, old.root, head.root), 5))
            consistency.check_signed.append(timed(partial(verify_consistency, key, old, head,
                                                          extension), 3))
        consistency.report("consistency", goal)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--proofs", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the log goes (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "audit.db"
        print(f"chainwatch audit bench: {args.leaves:,} alert leaves, batches of "
              f"{args.batch:,}", flush=True)
        overall, tail, per_cpu = appends(path, args.leaves, args.batch)
        size_mb = sum(p.stat().st_size for p in Path(tmp).glob("audit.db*")) / 2**20
        print(f"appends: {overall:,.0f} leaves/s overall, {tail:,.0f} leaves/s over the last "
              f"tenth (goal ≥ 50,000); {per_cpu:,.0f} leaves per CPU second (without the "
              f"fsync waits) · file {size_mb:,.0f} MiB "
              f"({size_mb * 2**20 / args.leaves:.0f} B/leaf)", flush=True)
        proofs(path, args.proofs)
        key = (Path(tmp) / "audit.db.key.pub").read_text()
        started = time.perf_counter()
        result = verify_store(path, public_key=key)
        elapsed = time.perf_counter() - started
        print(f"verify_store: {result}")
        print(f"  {elapsed:.1f} s, {result.size / elapsed:,.0f} leaves/s")


if __name__ == "__main__":
    main()
