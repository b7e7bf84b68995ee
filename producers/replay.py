"""Replay a historical file into Kafka: in chain order, paced, resumable, nothing lost.

Reading and mapping run in a planner process (:mod:`producers.handoff`); this process sends,
and saves the cursor after each flush. For each row: map it (:mod:`producers.formats`); a
row the format rejects goes to the dead-letter topic with its file, line and reason; a row
that is not for chainwatch is skipped; otherwise its records are sent, and its delayed labels
wait in a heap until stream time passes their release block. Stream time
(:func:`stream_time`) is the block number, or for exchange trades, which have no block, the
trade's unix second; ``--start-block`` and ``--end-block`` count in it too. Labels that come
with the source rather than a row (a trades folder's pumps.csv) wait in the same way; the
end of the data releases every label still waiting. Every ``cursor_every`` rows the planner
asks for a checkpoint: the producer is flushed and only then the cursor saved, so a restart
resumes with no gap. A resumed replay re-reads the rows before its cursor from the first
whose labels were still waiting (the first row, while a source label waits); of the
source's labels it sends again none that stream time had passed before the cursor.

Every row read is produced, dead-lettered or skipped: ``read = produced + dead_lettered +
skipped``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path

from pipeline.dlq import DeadLetterWriter
from pipeline.errors import RecordError
from pipeline.health import ServiceHealth
from pipeline.progress import Progress, eta, rate
from pipeline.records import ChainRecord, Label, Trade
from pipeline.settings import Settings, Topics
from producers import handoff
from producers.cursor import Cursor, Position
from producers.files import Row, count_rows, read_rows
from producers.formats import Format, make_format
from producers.handoff import Outbox
from producers.sink import message_for


@dataclass(frozen=True)
class ReplayOptions:
    speed: float | None = None  # None: as fast as possible; 1.0: real time; 10.0: 10x
    limit: int | None = None  # rows to read in this run
    start_block: int | None = None
    end_block: int | None = None
    cursor: Path | None = None
    cursor_every: int = 20_000
    progress: bool = True
    # send the labels that come with the source (a pumps.csv) before the first row instead
    # of once stream time reaches their release: a scorer applies a label only once its
    # trades reach ``released_block`` either way, but ahead of time it never reads one late,
    # so what it learns when does not depend on how fast it reads each topic (evaluate)
    labels_ahead: bool = False


@dataclass
class ReplaySummary:
    source: str
    format: str
    read: int = 0
    produced: int = 0  # rows produced (a row may yield more than one record)
    records: int = 0
    labels: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    out_of_order: int = 0
    resumed_from_row: int = 1
    elapsed_s: float = 0.0
    finished: bool = False
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.read == self.produced + self.dead_lettered + self.skipped


@dataclass(frozen=True)
class ReplayJob:
    """Everything the planner process needs, picklable."""

    format_name: str
    path: Path
    options: ReplayOptions
    topics: Topics
    start: Position
    pools: Path | None = None
    label_delay_blocks: int = 5760
    venue: str | None = None
    label_delay_s: int = 3600

    def make_format(self) -> Format:
        return make_format(self.format_name, self.pools, self.label_delay_blocks,
                           venue=self.venue, label_delay_s=self.label_delay_s)


def stream_time(record: ChainRecord) -> int:
    """What labels are released by: the block number, or a trade's unix second."""
    if isinstance(record, Trade):
        return record.time_s
    return record.block_number


def _order(record: ChainRecord) -> tuple[int, int, int]:
    """A record's place in the stream's own order."""
    if isinstance(record, Trade):
        return (record.timestamp, 0, 0)
    return (record.block_number, getattr(record, "transaction_index", None) or 0,
            getattr(record, "log_index", 0))


def _pace_time(record: ChainRecord) -> float | None:
    """Unix seconds to pace ``--speed`` by, if the record has them."""
    if isinstance(record, Trade):
        return record.timestamp / 1000
    timestamp: int | None = getattr(record, "block_timestamp", None)
    return timestamp


class Replayer:
    """Replays one source: plans records in a child process, sends and checkpoints here."""

    def __init__(self, settings: Settings, format_name: str, path: Path,
                 options: ReplayOptions | None = None, *, pools: Path | None = None,
                 label_delay_blocks: int = 5760, venue: str | None = None,
                 label_delay_s: int = 3600, stop: threading.Event | None = None,
                 health: ServiceHealth | None = None) -> None:
        self.settings = settings
        self.format_name = format_name
        self.path = path
        self.options = options or ReplayOptions()
        self.pools = pools
        self.label_delay_blocks = label_delay_blocks
        self.venue = venue
        self.label_delay_s = label_delay_s
        self.stop = stop or threading.Event()
        self.health = health or ServiceHealth()  # liveness and readiness of the sending loop

    def run(self) -> ReplaySummary:
        # a wrong format, path or pools file fails here, with one clear line, before any work
        make_format(self.format_name, self.pools, self.label_delay_blocks, venue=self.venue,
                    label_delay_s=self.label_delay_s).files(self.path)
        source = str(self.path.resolve())
        cursor = Cursor(self.options.cursor) if self.options.cursor else None
        start = (cursor.load(source, self.format_name) if cursor
                 else Position(source, self.format_name))
        if start.done:
            return ReplaySummary(source, self.format_name, resumed_from_row=start.next_row,
                                 finished=True)
        job = ReplayJob(self.format_name, self.path, self.options, self.settings.topics, start,
                        self.pools, self.label_delay_blocks, self.venue, self.label_delay_s)
        summary: ReplaySummary = handoff.run(
            plan_replay, job, self.settings, stop=self.stop, stage="replay",
            on_checkpoint=cursor.save if cursor else None, health=self.health)
        return summary


def plan_replay(job: ReplayJob, outbox: Outbox, stop: Event) -> ReplaySummary:
    """The planner: read, map and encode rows; runs in the child process."""
    return _Planner(job, outbox, stop).run()


class _Planner:
    def __init__(self, job: ReplayJob, outbox: Outbox, stop: Event) -> None:
        self.job = job
        self.options = job.options
        self.fmt = job.make_format()
        self.outbox = outbox
        self.stop = stop
        self.dlq = DeadLetterWriter(outbox, job.topics.dlq, stage="replay")
        self._pending: list[tuple[int, int, Label]] = []  # (release block, row, label)
        self._source_pending: list[tuple[int, int, Label]] = []  # (release, sequence, label)
        self._last_order: tuple[int, int, int] = (0, 0, 0)
        self._pace_origin: tuple[float, float] | None = None

    def run(self) -> ReplaySummary:
        opts, position = self.options, self.job.start
        files = self.fmt.files(self.job.path)
        summary = ReplaySummary(position.source, self.fmt.name,
                                resumed_from_row=position.next_row)
        if position.pending_from <= 1:  # else all were released before the cursor was saved
            sequence = itertools.count()
            self._source_pending = [(label.released_block, next(sequence), label)
                                    for label in self.fmt.source_labels()]
            heapq.heapify(self._source_pending)
            if opts.labels_ahead:
                for _, _, label in sorted(self._source_pending):
                    self._emit(label)
                    summary.labels += 1
                self._source_pending.clear()
        total = count_rows(files)
        started = time.monotonic()
        progress = Progress(lambda: self._status(summary, total, started, position.next_row),
                            enabled=opts.progress)
        next_row = position.next_row
        for row in read_rows(files, start=position.pending_from):
            if row.number < position.next_row:  # re-reading only to rebuild pending labels
                self._collect_labels(row)
                continue
            if self.stop.is_set() or (opts.limit is not None and summary.read >= opts.limit):
                break
            summary.read += 1
            if not self._handle(row, summary):
                break  # past --end-block
            next_row = row.number + 1
            if summary.read % opts.cursor_every == 0:
                self._checkpoint(next_row)
            progress.tick()
        else:
            for pending in (self._pending, self._source_pending):  # the end releases all
                for _, _, label in sorted(pending):
                    self._emit(label)
                    summary.labels += 1
                pending.clear()
            summary.finished = True
        self._checkpoint(next_row, done=summary.finished)
        summary.elapsed_s = time.monotonic() - started
        summary.dead_letter_reasons = dict(sorted(summary.dead_letter_reasons.items()))
        progress.done()
        return summary

    def _emit(self, record: ChainRecord) -> None:
        topic, key, value = message_for(record, self.job.topics)
        self.outbox.send(topic, value=value, key=key)

    def _handle(self, row: Row, summary: ReplaySummary) -> bool:
        """Produce, dead-letter or skip one row; False once past the end block."""
        if row.error is not None:
            self._dead_letter(summary, row, row.reason or "bad_row", row.error)
            return True
        try:
            mapped = self.fmt.map(row)
        except RecordError as exc:
            self._dead_letter(summary, row, exc.code, str(exc))
            return True
        if mapped is None or not mapped.records:
            summary.skipped += 1
            return True
        block = stream_time(mapped.records[0])
        if self.options.end_block is not None and block > self.options.end_block:
            summary.skipped += 1
            return False
        if self.options.start_block is not None and block < self.options.start_block:
            summary.skipped += 1
            return True
        self._release_labels(block, summary)
        for record in mapped.records:
            self._check_order(record, summary)
            self._pace(record)
            self._emit(record)
        summary.produced += 1
        summary.records += len(mapped.records)
        for label in mapped.labels:
            heapq.heappush(self._pending, (label.released_block, row.number, label))
        return True

    def _dead_letter(self, summary: ReplaySummary, row: Row, reason: str, detail: str) -> None:
        self.dlq.write(row.raw, reason, detail, row.location)
        summary.dead_lettered += 1
        summary.dead_letter_reasons[reason] = summary.dead_letter_reasons.get(reason, 0) + 1

    def _collect_labels(self, row: Row) -> None:
        """Rebuild the labels still waiting at the cursor: a row's own, and of the source's,
        only those whose release the stream had not yet passed (the row was produced)."""
        try:
            mapped = self.fmt.map(row) if row.error is None else None
        except RecordError:
            return
        for label in mapped.labels if mapped else []:
            heapq.heappush(self._pending, (label.released_block, row.number, label))
        if self._source_pending and mapped is not None and mapped.records:
            now, opts = stream_time(mapped.records[0]), self.options
            if opts.start_block is None or now >= opts.start_block:
                while self._source_pending and self._source_pending[0][0] <= now:
                    heapq.heappop(self._source_pending)  # sent before the cursor was saved

    def _release_labels(self, block: int, summary: ReplaySummary) -> None:
        for pending in (self._pending, self._source_pending):
            while pending and pending[0][0] <= block:
                self._emit(heapq.heappop(pending)[2])
                summary.labels += 1

    def _checkpoint(self, next_row: int, done: bool = False) -> None:
        # the source's labels are rebuilt by re-reading from the first row
        pending_from = min([row for _, row, _ in self._pending]
                           + ([1] if self._source_pending else []), default=next_row)
        self.outbox.checkpoint(Position(self.job.start.source, self.fmt.name, next_row,
                                        pending_from, done))

    def _check_order(self, record: ChainRecord, summary: ReplaySummary) -> None:
        order = _order(record)
        if order < self._last_order:
            summary.out_of_order += 1
        self._last_order = order

    def _pace(self, record: ChainRecord) -> None:
        speed = self.options.speed
        timestamp = _pace_time(record)
        if speed is None or timestamp is None:
            return
        if self._pace_origin is None:
            self._pace_origin = (time.monotonic(), timestamp)
        wall0, stream0 = self._pace_origin
        delay = wall0 + (timestamp - stream0) / speed - time.monotonic()
        if delay > 0:
            self.outbox.flush()  # what is due now goes out before the wait
            self.stop.wait(delay)

    @staticmethod
    def _status(summary: ReplaySummary, total: int, started: float, first_row: int) -> str:
        elapsed = time.monotonic() - started
        todo = max(total - first_row + 1, 1)
        done = summary.read
        return (f"replay {summary.format}: {done:,}/{todo:,} rows ({100 * done / todo:.0f}%) · "
                f"{rate(done, elapsed)} · ETA {eta(done, todo, elapsed)} · "
                f"{summary.dead_lettered:,} dead-lettered")
