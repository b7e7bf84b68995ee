"""Alert store: AlertStore.add's rate on SQLite and on PostgreSQL, in one run (not a test).

    python bench/alert_store.py [--alerts 50000] [--batch 2000] [--partitions 4] [--first N]
                                [--postgres-url postgresql://USER@HOST/DB] [--only BACKEND]

Each backend gets a fresh store: SQLite a file in a temporary directory, PostgreSQL a new
database on a throwaway server that tests/postgres.py starts (the tests' own
``PostgresServer``: initdb, a free loopback port, fsync off, gone at exit), or on
``--postgres-url``'s server when given. ``--alerts`` alerts of ~460 bytes, built (and
encoded) before the clock starts, go into ``add`` in batches of ``--batch`` with the offsets
of ``--partitions`` partitions, as the sink writes a polled batch, in three timed parts:

1. the first half into the empty store (with ``--first N``, its first N alerts in one
   ``add``, untimed: a large first write, after which chainwatch before this script's
   commit stalled on PostgreSQL, see ``_known`` in pipeline/alert_store.py);
2. ``ANALYZE`` (what autovacuum does to a store a sink has filled for a while, and what
   changes PostgreSQL's plans of the statements it has prepared), then the second half;
3. the last fifth again, every alert a duplicate (a restarted scorer re-sending).

Printed per backend and part: alerts/s (wall clock) and the batch times (median, p99, max:
the stalls); then PostgreSQL's rate as a share of SQLite's. Each part checks what the store
holds (every alert once, the last offsets).

The machine is shared and noisy: compare the figures of one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.alert_store import AlertStore, Incoming  # noqa: E402
from pipeline.alerts import Alert  # noqa: E402

TOPIC = "chainwatch.alerts"


def incoming(i: int) -> Incoming:
    """A realistic alert (~400 bytes of JSON), distinct for every ``i``, as the sink gets it."""
    subject = f"0x{i:040x}"
    a = Alert.build(type="rug_pull", severity="high", score=0.9, subject=subject,
                    detector="liquidity_drain", model_version="1",
                    evidence={"drop": 0.95, "reserve_weth": 12.5},
                    source={"topic": "chain.dex", "partition": i % 4, "offset": i,
                            "item_ids": [f"log_0x{i:064x}_{i % 7}"]},
                    event_time=1_700_000_000 + i, detected_at=1_700_000_000 + i)
    return Incoming(a.to_json(), a)


@dataclass
class Part:
    name: str
    alerts: int
    seconds: float
    batch_ms: list[float]

    @property
    def per_s(self) -> float:
        return self.alerts / self.seconds

    def line(self) -> str:
        times = sorted(self.batch_ms)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        return (f"  {self.name:<28} {self.per_s:>9,.0f} alerts/s; batch median "
                f"{statistics.median(times):.1f} ms, p99 {p99:.1f} ms, max {times[-1]:.1f} ms")


def run(backend: str, url: str, batches: list[list[Incoming]], partitions: int,
        first: list[Incoming]) -> list[Part]:
    """The three parts (see the module docstring) on the fresh store at ``url``, after
    ``first`` in one ``add``."""
    offsets = dict.fromkeys(((TOPIC, p) for p in range(partitions)), 0)
    half = len(batches) // 2
    parts: list[Part] = []
    with AlertStore.open(url) as store:
        store.add(first, offsets)

        def timed(name: str, todo: list[list[Incoming]], new: bool) -> None:
            times: list[float] = []
            began = time.perf_counter()
            for batch in todo:
                if new:
                    for p in offsets:
                        offsets[p] += len(batch) // partitions
                start = time.perf_counter()
                stored = store.add(batch, offsets)
                times.append(time.perf_counter() - start)
                if stored != (len(batch) if new else 0):
                    raise SystemExit(f"{backend}: stored {stored} of a batch of {len(batch)}")
            elapsed = time.perf_counter() - began
            parts.append(Part(name, sum(len(b) for b in todo), elapsed,
                              [t * 1000 for t in times]))

        timed(f"after a first add of {len(first):,}" if first else "into the empty store",
              batches[:half], new=True)
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        held = len(first) + sum(len(b) for b in batches[:half])
        timed(f"after ANALYZE, {held:,} stored", batches[half:], new=True)
        timed("all duplicates", batches[-max(1, len(batches) // 5):], new=False)
        total = sum(len(b) for b in batches) + len(first)
        if store.count() != total or store.offsets() != offsets:
            raise SystemExit(f"{backend}: the store holds {store.count()} alerts, not {total}")
    return parts


def _rate(parts: list[Part]) -> float:
    """Alerts/s over the two parts that store new alerts."""
    return sum(p.alerts for p in parts[:2]) / sum(p.seconds for p in parts[:2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--first", type=int, default=0,
                        help="alerts written in one add before the timed parts")
    parser.add_argument("--postgres-url", help="a server to use instead of a throwaway one")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    built = time.perf_counter()
    items = [incoming(i) for i in range(args.alerts + args.first)]
    first, items = items[:args.first], items[args.first:]
    batches = [items[i:i + args.batch] for i in range(0, len(items), args.batch)]
    print(f"{args.alerts:,} alerts of ~{len(items[0].raw)} bytes in batches of {args.batch:,}, "
          f"{args.partitions} partitions"
          + (f", after a first add of {args.first:,}" if first else "")
          + f" (built in {time.perf_counter() - built:.1f} s)")
    results: dict[str, list[Part]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-alert-store-") as tmp:
        if args.only in (None, "sqlite"):
            results["sqlite"] = run("sqlite", str(Path(tmp) / "alerts.db"), batches,
                                    args.partitions, first)
            _show("sqlite", results["sqlite"])
        if args.only in (None, "postgresql"):
            results["postgresql"] = _on_postgres(args.postgres_url, batches, args.partitions,
                                                 first)
            _show("postgresql", results["postgresql"])
    if len(results) == 2:
        share = _rate(results["postgresql"]) / _rate(results["sqlite"])
        print(f"PostgreSQL stores new alerts at {share:.2f}x SQLite's rate")
    return 0


def _show(backend: str, parts: list[Part]) -> None:
    print(f"{backend}: {_rate(parts):,.0f} alerts/s stored", flush=True)
    for part in parts:
        print(part.line(), flush=True)


def _on_postgres(url: str | None, batches: list[list[Incoming]], partitions: int,
                 first: list[Incoming]) -> list[Part]:
    """On a new database of ``url``'s server, or of a throwaway server (tests/postgres.py)."""
    from tests.postgres import PostgresServer, PostgresServerError, find_binaries

    if url:
        import sqlalchemy as sa

        from pipeline.alert_store import store_url

        name = f"bench_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(store_url(url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            return run("postgresql", url.rsplit("/", 1)[0] + f"/{name}", batches, partitions,
                       first)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("no PostgreSQL server binaries: run `bash .ci/tools.sh`, or give "
                         "--postgres-url")
    try:
        with PostgresServer(binaries) as server:
            print(f"(a throwaway PostgreSQL {binaries.version}, started in "
                  f"{server.startup_s:.1f} s)", flush=True)
            return run("postgresql", server.create_database(), batches, partitions, first)
    except PostgresServerError as exc:
        raise SystemExit(f"cannot start PostgreSQL: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
