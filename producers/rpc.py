"""The live source: follow a chain's head over Ethereum JSON-RPC, reorg-safe, into Kafka.

``chainwatch produce rpc --rpc-url URL`` polls the node for its head and reads every new
block in batches (one JSON-RPC batch for the blocks with their transactions, one for their
receipts, whose logs carry everything else), and writes what the replay formats write:

=====================  ==================================================================
record                 from
=====================  ==================================================================
Transaction            each transaction, with its receipt's status and gas used
TokenTransfer          each ERC-20 ``Transfer`` log (three topics, one word of data)
DexEvent ``swap``      a Uniswap-V2 pair's ``Swap`` log
DexEvent ``sync``      its ``Sync`` log (the reserves after the transaction)
DexEvent ``mint``,     its LP token's ``Transfer`` from the zero address (a mint), to the
``burn``, ``transfer``  zero address or the pair (a burn), or between holders, with the LP
                       amount: the uniswap-v2 format's reading, which the DEX detectors
                       were tuned on; the pair's own ``Mint``/``Burn`` logs add nothing
                       that ``Sync`` and these do not say, and are not written
=====================  ==================================================================

A pair is known from its factory's ``PairCreated`` log, or, for one created before the start
block, by asking it (``token0()``, ``token1()``, ``factory()``) the first time it logs; with
``--factory`` only that factory's pairs count.

**Reorgs.** The hashes of the last ``keep`` blocks written are kept. A block whose parent
is not the kept hash of the height below means the chain changed under us: the source walks
back to the newest kept block the node still has (the common ancestor), writes a
:class:`~pipeline.records.Retraction` for each orphaned block, newest first, to every
partition of every topic it wrote that block's records to, and goes on from the ancestor
along the new branch. ``confirmations=K`` reads only blocks K below the head, for users who
prefer lag to retractions. A reorg deeper than ``keep`` is an error (nothing to compare).

**Crashes.** A cursor file (the chain id, the next block, the kept hashes and the pairs
known) is replaced atomically after each batch's records are flushed; before a batch is
sent, the cursor records it as pending. A restart after any crash (SIGKILL included) re-reads
from the cursor's next block, so the records after it are sent again, identical (same item
ids) if the chain did not change, and a pending block the chain lost meanwhile is retracted
first: nothing is lost, and nothing but identical copies is sent twice.

**Limits.** Requests are paced to ``rate`` per second (a batch of n counts n) and retried
with exponential backoff (0.5 s doubling to 30 s) on connection errors, timeouts, HTTP 429
and 5xx, and JSON-RPC rate-limit or internal errors, ``max_retries`` times, then the source
stops with a one-line error. A node without ``eth_getBlockReceipts`` is asked for each
receipt instead. The URL's path and query (where providers put API keys) are never logged.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError

from pipeline import codec
from pipeline.errors import RecordError, SourceError
from pipeline.health import ServiceHealth
from pipeline.jsonrpc import Rpc, RpcError, Transport, connect, shown_url
from pipeline.metrics import RECORDS_PRODUCED
from pipeline.progress import Progress
from pipeline.records import (
    ChainRecord,
    Retraction,
    TokenTransfer,
    Transaction,
)
from pipeline.settings import Settings
from producers.cursor import replace_with
from producers.evm_logs import (
    PAIR_CREATED,
    SWAP,
    SYNC,
    _address,
    _int,
    _words,
    log_records,
)
from producers.sink import KafkaSink, message_for

log = logging.getLogger(__name__)

TOKEN0, TOKEN1, FACTORY = "0x0dfe1681", "0xd21220a7", "0xc45a0155"  # pair getters' selectors
CURSOR_VERSION = 1
MAX_POOLS = 100_000  # pairs remembered in the cursor


@dataclass(frozen=True)
class RpcOptions:
    start_block: int | None = None  # None: the head (minus confirmations) when first started
    until_block: int | None = None  # stop after writing this block
    confirmations: int = 0
    factory: str | None = None
    batch_blocks: int = 20
    rate: float = 50.0  # requests per second
    max_retries: int = 8
    poll_s: float = 1.0
    keep: int = 128  # kept block hashes: the deepest reorg that can be retracted
    cursor: Path | None = None
    progress: bool = False


@dataclass
class RpcSummary:
    source: str
    chain_id: int
    first_block: int | None = None
    last_block: int | None = None
    blocks: int = 0
    transactions: int = 0
    token_transfers: int = 0
    dex_events: int = 0
    retractions: int = 0  # orphaned blocks retracted
    reorgs: int = 0
    deepest_reorg: int = 0
    requests: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    finished: bool = False
    reorg_log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def records(self) -> int:
        return self.transactions + self.token_transfers + self.dex_events


# -- decoding -----------------------------------------------------------------------------

def transaction(tx: dict[str, Any], timestamp: int, receipt: dict[str, Any] | None
                ) -> Transaction:
    """A block's transaction (JSON-RPC form) with its receipt, as a record."""
    fields: dict[str, Any] = {
        "hash": tx["hash"], "nonce": _int(tx["nonce"]), "block_number": _int(tx["blockNumber"]),
        "block_timestamp": timestamp, "transaction_index": _int(tx["transactionIndex"]),
        "from_address": tx["from"], "to_address": tx.get("to"), "value": _int(tx["value"]),
        "gas": _int(tx["gas"]), "gas_price": _int(tx.get("gasPrice") or 0),
        "input": tx.get("input") or "0x"}
    for ours, theirs in (("max_fee_per_gas", "maxFeePerGas"),
                         ("max_priority_fee_per_gas", "maxPriorityFeePerGas"),
                         ("transaction_type", "type")):
        if tx.get(theirs) is not None:
            fields[ours] = _int(tx[theirs])
    if receipt is not None:
        fields["receipt_gas_used"] = _int(receipt["gasUsed"])
        if receipt.get("status") is not None:
            fields["receipt_status"] = _int(receipt["status"])
    return Transaction.from_dict(fields)


# -- the cursor ---------------------------------------------------------------------------

@dataclass
class Kept:
    number: int
    hash: str
    topics: list[str]  # the topics its records went to


@dataclass
class CursorState:
    chain_id: int
    next_block: int
    kept: list[Kept] = field(default_factory=list)  # oldest first
    pending: list[Kept] = field(default_factory=list)  # being sent when the cursor was saved
    pools: dict[str, tuple[str, str]] = field(default_factory=dict)


class RpcCursor:
    """The cursor file: replaced atomically (temporary file, fsync, rename)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> CursorState | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != CURSOR_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            return CursorState(
                chain_id=int(data["chain_id"]), next_block=int(data["next_block"]),
                kept=[Kept(int(n), str(h), list(t)) for n, h, t in data["kept"]],
                pending=[Kept(int(n), str(h), list(t)) for n, h, t in data["pending"]],
                pools={str(p): (str(a), str(b)) for p, (a, b) in data["pools"].items()})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"cursor {self.path} is unreadable ({exc}); delete it to start "
                              "again from --start-block") from None

    def save(self, st: CursorState) -> None:
        if self.path is None:
            return
        body = json.dumps({
            "version": CURSOR_VERSION, "chain_id": st.chain_id, "next_block": st.next_block,
            "kept": [[k.number, k.hash, k.topics] for k in st.kept],
            "pending": [[k.number, k.hash, k.topics] for k in st.pending],
            "pools": {p: list(t) for p, t in list(st.pools.items())[-MAX_POOLS:]}})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
        replace_with(self.path, fd, tmp, body)


# -- the follower -------------------------------------------------------------------------

@dataclass
class _Block:
    number: int
    hash: str
    parent: str
    timestamp: int
    transactions: list[dict[str, Any]]
    receipts: list[dict[str, Any]] = field(default_factory=list)


class RpcSource:
    """Follows the node at ``url`` into Kafka with ``settings``; :meth:`run` until
    ``until_block`` is written or ``stop`` is set."""

    def __init__(self, settings: Settings, url: str, options: RpcOptions, *,
                 stop: threading.Event | None = None, health: ServiceHealth | None = None,
                 transport: Transport | None = None) -> None:
        self.settings = settings
        self.url = url
        self.shown = shown_url(url)
        self.options = options
        self.stop = stop or threading.Event()
        self.health = health
        self.transport = transport
        self.cursor = RpcCursor(options.cursor)
        self.factory = options.factory.lower() if options.factory else None
        self.summary = RpcSummary(source=self.shown, chain_id=0)
        self._rpc: Rpc
        self._sink: KafkaSink

    def run(self) -> RpcSummary:
        started = time.monotonic()
        transport = self.transport or connect(self.url)
        rpc = Rpc(transport, self.shown, rate=self.options.rate,
                  max_retries=self.options.max_retries, summary=self.summary)
        self._rpc = rpc
        status = Progress(self._status, enabled=self.options.progress)
        try:
            chain_id = _int(rpc.call("eth_chainId"))
            self.summary.chain_id = chain_id
            st = self._start(rpc, chain_id)
            with KafkaSink(self.settings) as sink:
                self._sink = sink
                if st.pending:
                    self._recover(rpc, sink, st)
                self._follow(rpc, sink, st, status)
        except KafkaError as exc:
            raise SourceError(f"Kafka failed while producing: {exc}") from None
        finally:
            status.done()
            transport.close()
            self.summary.elapsed_s = round(time.monotonic() - started, 3)
        return self.summary

    def _status(self) -> str:
        s = self.summary
        return (f"rpc {self.shown}: block {s.last_block if s.last_block is not None else '-'} · "
                f"{s.blocks:,} blocks, {s.records:,} records · {s.retractions} retracted")

    def _start(self, rpc: Rpc, chain_id: int) -> CursorState:
        saved = self.cursor.load()
        if saved is not None:
            if saved.chain_id != chain_id:
                raise SourceError(f"cursor {self.cursor.path} is for chain {saved.chain_id}; "
                                  f"the node at {self.shown} serves chain {chain_id}; give "
                                  "another --cursor")
            return saved
        start = self.options.start_block
        if start is None:
            start = max(_int(rpc.call("eth_blockNumber")) - self.options.confirmations, 0)
        return CursorState(chain_id=chain_id, next_block=start)

    def _follow(self, rpc: Rpc, sink: KafkaSink, st: CursorState, status: Progress) -> None:
        until = self.options.until_block
        while not self.stop.is_set():
            if until is not None and st.next_block > until:
                self.summary.finished = True
                return
            head = _int(rpc.call("eth_blockNumber")) - self.options.confirmations
            last = min(head, st.next_block + self.options.batch_blocks - 1,
                       until if until is not None else head)
            if last < st.next_block:  # nothing new: is our tip still the node's?
                if st.kept and self._tip_gone(rpc, st):
                    self._reorg(rpc, st)
                    continue
                if self.health is not None:
                    self.health.beat()
                self.stop.wait(self.options.poll_s)
                continue
            blocks = self._fetch(rpc, st, st.next_block, last)
            if blocks:
                self._write(sink, st, blocks)
            status.tick()
            if self.health is not None:
                self.health.beat()

    def _fetch(self, rpc: Rpc, st: CursorState, first: int, last: int) -> list[_Block]:
        """Blocks ``first``..``last`` with receipts, cut where the chain changed under us;
        a reorg against the kept blocks is retracted first (and [] returned)."""
        raw = rpc.batch([("eth_getBlockByNumber", [hex(n), True]) for n in
                         range(first, last + 1)])
        blocks: list[_Block] = []
        for b in raw:
            if b is None:
                break  # the head moved back while we asked
            block = _Block(_int(b["number"]), b["hash"], b["parentHash"],
                           _int(b["timestamp"]), b.get("transactions") or [])
            below = blocks[-1].hash if blocks else (st.kept[-1].hash if st.kept else None)
            if below is not None and block.parent != below:
                if not blocks:
                    self._reorg(rpc, st)
                    return []
                break  # changed within the batch: the next round sees it against the kept
            blocks.append(block)
        self._receipts(rpc, blocks)
        return blocks

    def _receipts(self, rpc: Rpc, blocks: list[_Block]) -> None:
        if rpc.has_block_receipts:
            try:
                got = rpc.batch([("eth_getBlockReceipts", [hex(b.number)]) for b in blocks])
                for block, receipts in zip(blocks, got, strict=True):
                    block.receipts = receipts or []
            except RpcError as exc:
                if exc.code not in (-32601, -32600):
                    raise SourceError(f"the node at {self.shown}: {exc}") from None
                log.info("rpc: %s has no eth_getBlockReceipts; asking for each receipt",
                         self.shown)
                rpc.has_block_receipts = False
        if not rpc.has_block_receipts:
            hashes = [tx["hash"] for b in blocks for tx in b.transactions]
            each = iter(rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes]))
            for block in blocks:
                block.receipts = [next(each) for _ in block.transactions]
        for block in blocks:
            if len(block.receipts) != len(block.transactions) or any(
                    r is None or r.get("blockHash") != block.hash for r in block.receipts):
                # the block was replaced between the two requests: read it again next round
                del blocks[blocks.index(block):]
                return

    def _write(self, sink: KafkaSink, st: CursorState, blocks: list[_Block]) -> None:
        self._learn_pools(blocks, st)
        batches = []
        for block in blocks:
            records = self._records(block, st)
            topics = sorted({message_for(r, self.settings.topics)[0] for r in records})
            batches.append((block, records, Kept(block.number, block.hash, topics)))
        st.pending = [k for _, _, k in batches]
        self.cursor.save(st)  # what is about to be sent, for a restart to check
        for block, records, kept in batches:
            for record in records:
                sink.write(record)
                if isinstance(record, Transaction):
                    self.summary.transactions += 1
                elif isinstance(record, TokenTransfer):
                    self.summary.token_transfers += 1
                else:
                    self.summary.dex_events += 1
            st.kept.append(kept)
            self.summary.blocks += 1
            self.summary.first_block = (block.number if self.summary.first_block is None
                                        else self.summary.first_block)
            self.summary.last_block = block.number
        sink.flush()
        del st.kept[:-self.options.keep]
        st.pending = []
        st.next_block = blocks[-1].number + 1
        self.cursor.save(st)

    def _records(self, block: _Block, st: CursorState) -> list[ChainRecord]:
        out: list[ChainRecord] = []
        for tx, receipt in zip(block.transactions, block.receipts, strict=True):
            try:
                out.append(transaction(tx, block.timestamp, receipt))
            except RecordError as exc:
                log.warning("rpc: block %d: transaction %s not written: %s", block.number,
                            tx.get("hash"), exc)
        for receipt in block.receipts:
            for entry in receipt.get("logs") or []:
                try:
                    out += log_records(entry, block.timestamp, st.pools)
                except (RecordError, ValueError, KeyError) as exc:
                    log.warning("rpc: block %d: a log of %s not written: %s", block.number,
                                entry.get("address"), exc)
        return out

    def _learn_pools(self, blocks: list[_Block], st: CursorState) -> None:
        """Pairs from their factory's PairCreated logs; pairs logging Sync or Swap that are
        not known yet are asked for their tokens (and factory)."""
        unknown: set[str] = set()
        for block in blocks:
            for receipt in block.receipts:
                for entry in receipt.get("logs") or []:
                    topics = [t.lower() for t in entry.get("topics") or []]
                    address = str(entry.get("address", "")).lower()
                    if topics and topics[0] == PAIR_CREATED and len(topics) >= 3 and (
                            self.factory is None or address == self.factory):
                        words = _words(entry.get("data") or "0x")
                        if words:
                            pair = "0x" + f"{words[0]:064x}"[-40:]
                            st.pools[pair] = (_address(topics[1]), _address(topics[2]))
                    elif topics and topics[0] in (SYNC, SWAP) and address not in st.pools:
                        unknown.add(address)
        if unknown:
            self._ask_pools(sorted(unknown), st)

    def _ask_pools(self, addresses: list[str], st: CursorState) -> None:
        rpc = self._rpc
        calls = [("eth_call", [{"to": a, "data": sel}, "latest"]) for a in addresses
                 for sel in (TOKEN0, TOKEN1, FACTORY)]
        try:
            got = rpc.batch(calls)
        except RpcError:
            got = []
            for call in calls:
                try:
                    got.append(rpc.batch([call])[0])
                except RpcError:
                    got.append(None)
        for i, address in enumerate(addresses):
            t0, t1, factory = got[3 * i:3 * i + 3]
            words = [_words(x)[0] if isinstance(x, str) and len(x) >= 66 else None
                     for x in (t0, t1, factory)]
            if None in words[:2]:
                continue  # not a pair
            if self.factory is not None and (words[2] is None or
                                             "0x" + f"{words[2]:064x}"[-40:] != self.factory):
                continue
            st.pools[address] = ("0x" + f"{words[0]:064x}"[-40:], "0x" + f"{words[1]:064x}"[-40:])

    @staticmethod
    def _tip_gone(rpc: Rpc, st: CursorState) -> bool:
        got = rpc.call("eth_getBlockByNumber", hex(st.kept[-1].number), False)
        return got is None or got["hash"] != st.kept[-1].hash

    def _reorg(self, rpc: Rpc, st: CursorState) -> None:
        """The kept chain's tip is gone: find the newest kept block the node still has,
        retract the kept blocks above it (newest first) and go on from it."""
        kept = st.kept
        canonical: dict[int, str | None] = {}
        ancestor: int | None = None
        for i in range(len(kept) - 1, -1, -1):
            got = rpc.call("eth_getBlockByNumber", hex(kept[i].number), False)
            canonical[kept[i].number] = got["hash"] if got else None
            if got is not None and got["hash"] == kept[i].hash:
                ancestor = i
                break
        if ancestor is None:
            raise SourceError(f"a reorg deeper than the {len(kept)} kept blocks (below block "
                              f"{kept[0].number}); nothing is left to compare it with: start "
                              "again with a new --cursor and a --start-block")
        orphaned = kept[ancestor + 1:]
        self._retract(self._sink, orphaned[::-1], canonical)
        del kept[ancestor + 1:]
        st.next_block = kept[ancestor].number + 1
        self.cursor.save(st)
        self.summary.reorgs += 1
        self.summary.deepest_reorg = max(self.summary.deepest_reorg, len(orphaned))
        self.summary.reorg_log.append({"ancestor": kept[ancestor].number,
                                       "orphaned": [k.number for k in orphaned]})
        log.warning("rpc: reorg of depth %d after block %d: %d blocks retracted",
                    len(orphaned), kept[ancestor].number, len(orphaned))

    def _retract(self, sink: KafkaSink, orphaned: list[Kept],
                 canonical: dict[int, str | None]) -> None:
        producer = sink.producer
        for k in orphaned:
            new = canonical.get(k.number)
            reason = f"reorg: replaced by {new}" if new else "reorg: the height is gone"
            record = Retraction(k.number, k.hash, reason)
            value = codec.encode(record)
            for topic in k.topics:
                for partition in sorted(producer.partitions_for(topic) or ()):
                    producer.send(topic, value=value, key=record.key.encode(),
                                  partition=partition)
                    RECORDS_PRODUCED.labels(topic=topic).inc()
            self.summary.retractions += 1
        producer.flush()

    def _recover(self, rpc: Rpc, sink: KafkaSink, st: CursorState) -> None:
        """A crash while a batch was being sent: retract its blocks the chain has lost."""
        numbers = [k.number for k in st.pending]
        got = rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        canonical = {n: (b["hash"] if b else None) for n, b in zip(numbers, got, strict=True)}
        lost = [k for k in st.pending if canonical[k.number] != k.hash]
        if lost:
            self._retract(sink, lost[::-1], canonical)
        st.pending = []
        self.cursor.save(st)
