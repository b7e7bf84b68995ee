"""Replay formats: how one row of a historical file becomes chainwatch records.

Each format maps a :class:`~producers.files.Row` to a :class:`Mapped` (records to send now,
and labels to release later in stream time), to ``None`` for a row that is not for
chainwatch (a log of another contract), or raises :class:`~pipeline.errors.RecordError`.
Mapping is a pure function of the row, so a re-sent row yields the same records.

| format            | input                                                 | records        |
|-------------------|-------------------------------------------------------|----------------|
| `transactions`    | ethereum-etl / BigQuery `transactions`                | Transaction    |
| `token-transfers` | ethereum-etl / BigQuery `token_transfers`             | TokenTransfer  |
| `logs`            | ethereum-etl stream / BigQuery `logs` (Uniswap-V2     | DexEvent       |
|                   | Swap/Mint/Burn/Sync; needs a pools file for tokens)   |                |
| `uniswap-v2`      | shared/data/uniswap-v2-2021 (Sync, LP Transfer)       | DexEvent       |
| `blte`            | shared/data/blte-ethereum-scam-tx (labelled)          | Transaction,   |
|                   |                                                       | delayed Label  |
| `trades`          | ccxt `fetch_trades` rows, or shared/data/             | Trade, delayed |
|                   | pump-telegram-binance (pumps.csv: one label per pump) | Label          |
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.errors import RecordError, SourceError
from pipeline.records import (
    MAX_RECORD_BYTES,
    ZERO_ADDRESS,
    ChainRecord,
    DexEvent,
    Label,
    TokenTransfer,
    Trade,
    Transaction,
    parse_price,
    parse_quantity,
    parse_timestamp,
)
from producers.evm_logs import BURN, MINT, SWAP, SYNC, log_records
from producers.files import SUFFIXES, Row, columns, source_files

# uniswap-v2-2021 has no timestamps: about 13.2 s per block from its first block, which was
# mined in early September 2021. Approximate, and documented as such in the replay summary.
UNISWAP_FIRST_BLOCK = 13_153_380
UNISWAP_FIRST_TIMESTAMP = 1_630_713_600  # 2021-09-04T00:00:00Z
UNISWAP_BLOCK_TIME_S = 13.2


KIND_NAMES = {"csv": "a CSV", "jsonl": "a JSON lines file", "parquet": "a Parquet file"}


@dataclass
class Mapped:
    records: list[ChainRecord]
    labels: list[Label] = field(default_factory=list)


class Format:
    name = ""
    summary = ""
    columns: tuple[str, ...] = ()  # a file without one of these is not of this format

    def files(self, path: Path) -> list[Path]:
        """The source's files, each checked to have this format's columns (header or
        schema only; bad rows in a good file go to the dead-letter topic later)."""
        files = source_files(path)
        for file in files:
            self.check_columns(file)
        return files

    def check_columns(self, path: Path) -> None:
        found = columns(path)
        if found is None:  # an empty file: no rows to check
            return
        missing = [name for name in self.columns if name not in found]
        if missing:
            kind = KIND_NAMES[SUFFIXES[path.suffix.lower()]]
            raise SourceError(f"{path}: not {kind} of {self.summary}: missing columns "
                              f"{', '.join(missing)}; check --format")

    def map(self, row: Row) -> Mapped | None:
        raise NotImplementedError

    def source_labels(self) -> list[Label]:
        """Delayed labels that come with the source rather than with a row (known once
        :meth:`files` has run); the replay releases each in stream time."""
        return []


class Transactions(Format):
    name, summary = "transactions", "ethereum-etl / BigQuery transactions"
    columns = ("hash", "nonce", "block_number", "block_timestamp", "transaction_index",
               "from_address", "value", "gas", "gas_price")

    def map(self, row: Row) -> Mapped:
        return Mapped([Transaction.from_dict(row.values)])


class TokenTransfers(Format):
    name, summary = "token-transfers", "ethereum-etl / BigQuery token_transfers"
    columns = ("token_address", "from_address", "to_address", "value", "transaction_hash",
               "log_index", "block_number")

    def map(self, row: Row) -> Mapped:
        return Mapped([TokenTransfer.from_dict(row.values)])


class Logs(Format):
    """Uniswap-V2 pair events decoded from raw logs as the live source decodes them
    (:mod:`producers.evm_logs`: Sync, Swap, LP Transfer; a pair's Mint and Burn logs give
    nothing); other contracts' logs are skipped."""

    name, summary = "logs", "ethereum-etl / BigQuery logs (Uniswap-V2 pair events)"
    columns = ("address", "topics", "data", "block_number", "block_timestamp",
               "transaction_hash", "log_index")

    def __init__(self, pools: dict[str, tuple[str, str]]) -> None:
        self.pools = pools

    def map(self, row: Row) -> Mapped | None:
        v = row.values
        topics = v.get("topics") or []
        if isinstance(topics, str):
            topics = [t for t in topics.split(",") if t]
        topic0 = topics[0].lower() if topics else ""
        pool = str(v.get("address", "")).lower()
        if topic0 in (SYNC, SWAP, MINT, BURN) and pool not in self.pools:
            raise RecordError("unknown_pool", f"pool {pool!r} is not in the pools file; pass "
                              "--pools FILE with pool_address, token0, token1", "address", pool)
        if pool not in self.pools:
            return None  # another contract's log
        data = str(v.get("data") or "0x")
        try:
            entry = {"address": pool, "topics": topics, "data": data,
                     "blockNumber": _number("block_number", v.get("block_number")),
                     "transactionHash": v.get("transaction_hash"),
                     "logIndex": _number("log_index", v.get("log_index")),
                     "transactionIndex": _number("transaction_index",
                                                 v.get("transaction_index"), optional=True)}
            timestamp = _number("block_timestamp", v.get("block_timestamp"))
            records = [r for r in log_records(entry, timestamp, self.pools)
                       if isinstance(r, DexEvent)]
        except ValueError:
            raise RecordError("bad_value", "field 'data': not hex", "data", data) from None
        return Mapped(list(records)) if records else None


def _number(name: str, value: Any, optional: bool = False) -> Any:
    """A whole number from an export's cell (an int, or its decimal string)."""
    if value in (None, "") and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise RecordError("bad_value" if value not in (None, "") else "missing_field",
                      f"field {name!r}: expected a whole number (got {value!r})", name, value)


class UniswapV2(Format):
    """The uniswap-v2-2021 dataset: Sync → reserves; LP-token Transfer from the zero address
    → mint, to the pool or the zero address → burn, between holders → transfer."""

    name, summary = "uniswap-v2", "uniswap-v2-2021 pool logs (events.parquet + pools.parquet)"
    columns = ("block_number", "transaction_hash", "log_index", "pool_address", "event")

    def __init__(self) -> None:
        self.pools: dict[str, tuple[str, str]] = {}

    def files(self, path: Path) -> list[Path]:
        events = path / "events.parquet" if path.is_dir() else path
        pools = events.with_name("pools.parquet")
        if not events.is_file():
            raise SourceError(f"{events} does not exist; give the uniswap-v2-2021 folder")
        if not pools.is_file():
            raise SourceError(f"{pools} does not exist; it must lie beside events.parquet")
        self.check_columns(events)
        self.pools = load_pools(pools)
        return [events]

    def map(self, row: Row) -> Mapped:
        v = row.values
        pool = str(v.get("pool_address") or "").lower()
        tokens = self.pools.get(pool)
        if tokens is None:
            raise RecordError("unknown_pool", f"pool {pool!r} is not in pools.parquet",
                              "pool_address", pool)
        block = v.get("block_number")
        timestamp = None
        if isinstance(block, int):
            timestamp = UNISWAP_FIRST_TIMESTAMP + round(
                (block - UNISWAP_FIRST_BLOCK) * UNISWAP_BLOCK_TIME_S)
        base = {"pool_address": pool, "token0": tokens[0], "token1": tokens[1],
                "block_number": block, "block_timestamp": timestamp,
                "transaction_hash": v.get("transaction_hash"), "log_index": v.get("log_index"),
                "transaction_index": v.get("transaction_index")}
        event = v.get("event")
        if event == "Sync":
            fields = {"kind": "sync", "reserve0": v.get("reserve0"),
                      "reserve1": v.get("reserve1")}
        elif event == "Transfer":
            src, dst = v.get("from_address"), v.get("to_address")
            kind = ("mint" if src == ZERO_ADDRESS else
                    "burn" if dst in (ZERO_ADDRESS, pool) else "transfer")
            fields = {"kind": kind, "liquidity": v.get("value"), "sender": src, "to": dst}
        else:
            raise RecordError("bad_value", f"field 'event': expected Sync or Transfer (got "
                              f"{event!r})", "event", event)
        return Mapped([DexEvent.from_dict(base | fields)])


class Blte(Format):
    """Labelled transactions whose addresses and hashes were stripped by the publishers.

    Each row gets a deterministic hash and sender/receiver derived from its row number (so
    per-address features carry no information here), goes to the transactions topic, and its
    label goes to the labels topic ``label_delay_blocks`` later in stream time.
    """

    name, summary = "blte", "blte-ethereum-scam-tx labelled transactions"
    columns = ("block_number", "block_timestamp", "value", "gas", "gas_price", "class")

    def __init__(self, label_delay_blocks: int = 5760) -> None:
        self.label_delay_blocks = label_delay_blocks

    def map(self, row: Row) -> Mapped:
        v = row.values
        tx_hash = "0x" + hashlib.sha256(f"blte/{row.number}".encode()).hexdigest()
        tx = Transaction.from_dict({
            "hash": tx_hash, "nonce": 0, "block_number": v.get("block_number"),
            "block_timestamp": v.get("block_timestamp"), "transaction_index": 0,
            "from_address": _derived_address("from", row.number),
            "to_address": _derived_address("to", row.number),
            "value": _exact_number("value", v.get("value")), "gas": v.get("gas"),
            "gas_price": _exact_number("gas_price", v.get("gas_price")),
            "receipt_gas_used": v.get("receipt_gas_used"), "receipt_status": 1,
        })
        label = Label.from_dict({
            "subject": tx.item_id, "label": v.get("class"), "source": "blte",
            "block_number": tx.block_number,
            "released_block": tx.block_number + self.label_delay_blocks,
            "partition_key": tx.from_address,
        })
        return Mapped([tx], [label])


class Trades(Format):
    """Exchange trades as ccxt's ``fetch_trades`` returns them (``timestamp`` in ms, else
    ``datetime``; ``symbol``; ``side``; ``price``; ``amount``; ``cost``, else price * amount;
    ``id``), or the pump-telegram-binance layout (``market``, ``timestamp_ms``,
    ``quote_volume``, and ``pump_id``, which becomes the trade's ``stream``). The venue is a
    ``venue`` or ``exchange`` column, else ``venue`` (``--venue``).

    A ``pumps.csv`` in the trades' folder gives one label per pump: subject ``pump_id``,
    stream time its ``announced_at`` in unix seconds, released ``label_delay_s`` later, keyed
    by ``pump_id`` like the pump's trades.
    """

    name, summary = "trades", "ccxt trades"
    # each needed column and the other names it goes by
    aliases = (("symbol", "market"), ("side",), ("price",), ("amount",),
               ("timestamp", "timestamp_ms", "datetime"))

    def __init__(self, venue: str | None = None, label_delay_s: int = 3600) -> None:
        self.venue = venue
        self.label_delay_s = label_delay_s
        self._labels: list[Label] = []

    def files(self, path: Path) -> list[Path]:
        files = [f for f in source_files(path) if f.name.lower() != PUMPS_FILE]
        if not files:
            raise SourceError(f"{path} holds no trades ({PUMPS_FILE} holds the pumps, not "
                              "trades); give the trades file or their folder")
        for file in files:
            self.check_columns(file)
        pumps = (path if path.is_dir() else path.parent) / PUMPS_FILE
        self._labels = load_pump_labels(pumps, self.label_delay_s) if pumps.is_file() else []
        return files

    def check_columns(self, path: Path) -> None:
        found = columns(path)
        if found is None:
            return
        missing = [names[0] + (f" (or {', '.join(names[1:])})" if names[1:] else "")
                   for names in self.aliases if not found.intersection(names)]
        if missing:
            kind = KIND_NAMES[SUFFIXES[path.suffix.lower()]]
            raise SourceError(f"{path}: not {kind} of {self.summary}: missing columns "
                              f"{', '.join(missing)}; check --format")
        if self.venue is None and not found.intersection(("venue", "exchange")):
            raise SourceError(f"{path} has no venue or exchange column; pass --venue NAME "
                              "(the exchange the trades are from, e.g. --venue binance)")

    def map(self, row: Row) -> Mapped:
        v = row.values
        size = (len(row.text) if row.text is not None
                else sum(len(x) for x in v.values() if isinstance(x, str)))
        if size > MAX_RECORD_BYTES:
            raise RecordError("oversized", f"row is {size} bytes, over the {MAX_RECORD_BYTES}"
                              "-byte limit of a record (a trade is a few hundred bytes)")
        price, amount = v.get("price"), v.get("amount")  # NaN is a bad value here
        cost = _first(v, "cost", "quote_volume")  # NaN: ccxt's None in a DataFrame
        if cost is None and price is not None and amount is not None:
            cost = parse_price("price", price) * parse_quantity("amount", amount)
        venue = _first(v, "venue", "exchange")
        return Mapped([Trade.from_dict({
            "venue": self.venue if venue is None else venue,
            "market": _first(v, "symbol", "market"), "side": v.get("side"),
            "price": price, "amount": amount, "quote_volume": cost,
            "timestamp": _first(v, "timestamp", "timestamp_ms", "datetime"),
            "trade_id": _trade_id(v.get("id")), "stream": _first(v, "pump_id"),
        })])

    def source_labels(self) -> list[Label]:
        return list(self._labels)


PUMPS_FILE = "pumps.csv"


def load_pump_labels(path: Path, delay_s: int) -> list[Label]:
    """One label per row of a pumps.csv (pump_id, announced_at as ISO UTC time)."""
    labels: list[Label] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("pump_id", "announced_at") if c not in (reader.fieldnames
                                                                         or ())]
            if missing:
                raise SourceError(f"{path}: missing columns {', '.join(missing)}; give a "
                                  "pumps.csv with pump_id and announced_at, or move it away")
            for line, row in enumerate(reader, start=2):
                try:
                    announced = parse_timestamp("announced_at", row.get("announced_at"))
                    labels.append(Label.from_dict({
                        "subject": row.get("pump_id"), "label": 1, "source": "pumps",
                        "block_number": announced, "released_block": announced + delay_s,
                        "partition_key": row.get("pump_id")}))
                except RecordError as exc:
                    raise SourceError(f"{path}, line {line}: {exc}; fix the row") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from None
    return labels


def _first(values: dict[str, Any], *names: str) -> Any:
    """The first of ``names`` with a value (a NaN, pandas' missing number, is none)."""
    for name in names:
        value = values.get(name)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return value
    return None


def _trade_id(value: Any) -> Any:
    """ccxt's ``id`` is text; JSON and Parquet may carry it as a number."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def load_pools(path: Path) -> dict[str, tuple[str, str]]:
    """pool address → (token0, token1) from a Parquet or CSV file with those columns."""
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path, columns=["pool_address", "token0", "token1"])
        else:
            table = pacsv.read_csv(path).select(["pool_address", "token0", "token1"])
    except Exception as exc:
        raise SourceError(f"cannot read pools file {path}: {exc}") from None
    return {str(p).lower(): (str(a).lower(), str(b).lower()) for p, a, b in zip(
        *(table.column(c).to_pylist() for c in ("pool_address", "token0", "token1")),
        strict=True)}


def _derived_address(role: str, number: int) -> str:
    return "0x" + hashlib.sha256(f"blte/{role}/{number}".encode()).hexdigest()[:40]


def _exact_number(name: str, value: Any) -> Any:
    """BLTE writes some amounts as floats ("1.8e+18"); take them only when integral."""
    if not isinstance(value, str) or value.isdigit():
        return value
    try:
        number = Decimal(value)
    except InvalidOperation:
        return value  # let the record parser name it
    if number != number.to_integral_value():
        raise RecordError("bad_value", f"field {name!r}: not a whole number of wei (got "
                          f"{value!r})", name, value)
    return int(number)


def make_format(name: str, pools: Path | None = None, label_delay_blocks: int = 5760, *,
                venue: str | None = None, label_delay_s: int = 3600) -> Format:
    if name == "trades":
        return Trades(venue, label_delay_s)
    if name == "logs":
        if pools is None:
            raise SourceError("format logs needs --pools FILE (pool_address, token0, token1) "
                              "to know each pair's tokens")
        return Logs(load_pools(pools))
    if name == "blte":
        return Blte(label_delay_blocks)
    simple: dict[str, type[Format]] = {"transactions": Transactions,
                                       "token-transfers": TokenTransfers,
                                       "uniswap-v2": UniswapV2}
    if name not in simple:
        raise SourceError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}")
    return simple[name]()


FORMATS = ("transactions", "token-transfers", "logs", "uniswap-v2", "blte", "trades")
