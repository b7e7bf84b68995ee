"""Chain records: frozen, typed, validated once at the edge.

Field names follow ethereum-etl and the public BigQuery ``crypto_ethereum`` schema, so real
exports replay unchanged. Amounts are exact Python ints (uint256); on the wire they are decimal
strings (see :mod:`pipeline.codec`). Every record has a deterministic ``item_id`` used to
de-duplicate end to end.

Build records with ``from_dict``; it accepts what exports contain (ints, decimal or ``0x`` hex
strings, ISO or unix timestamps) and raises :class:`~pipeline.errors.RecordError` naming the
field and value for anything else.

Every field is bounded, so that no record carries unbounded or state-poisoning input:

* block numbers (``block_number``, ``released_block``) are at most :data:`MAX_BLOCK_NUMBER`
  (10**12: Ethereum is near 2*10**7 after ten years, the fastest chains' slots near 4*10**8);
  a larger one is ``bad_value``. A block below it is taken at its word, in any order: the
  features cope with blocks out of order (see :mod:`pipeline.features`);
* hashes and addresses have their exact formats; ``input`` calldata is at most
  :data:`MAX_RECORD_BYTES` bytes; free text (a label's ``subject``, ``source`` and
  ``partition_key``) is at most the length :data:`TEXT_LIMITS` gives, longer is ``too_long``;
* integers fit their type (uint64 counters, uint256 amounts).

>>> tx = Transaction.from_dict({
...     "hash": "0x" + "ab" * 32, "nonce": 0, "block_number": 1, "block_timestamp": 1630454400,
...     "transaction_index": 0, "from_address": "0x" + "11" * 20, "to_address": None,
...     "value": "1000000000000000000", "gas": 21000, "gas_price": "0x3b9aca00", "input": "0x"})
>>> tx.value, tx.gas_price, tx.item_id[:16]
(1000000000000000000, 1000000000, 'transaction_0xab')
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self, TypeGuard

from pipeline.errors import RecordError

UINT256_MAX = 2**256 - 1
UINT64_MAX = 2**64 - 1
MAX_BLOCK_NUMBER = 10**12
"""The largest plausible block number (or slot): larger ones are rejected as ``bad_value``."""
MAX_RECORD_BYTES = 1_000_000  # Apache Kafka's default message.max.bytes
"""The largest record, as encoded JSON; it also bounds ``input`` calldata."""
MAX_INPUT_CHARS = 2 + 2 * MAX_RECORD_BYTES
TEXT_LIMITS = {"subject": 256, "source": 128, "partition_key": 256, "venue": 64, "market": 128,
               "trade_id": 128, "taker": 128, "stream": 128, "reason": 200}
"""Maximum length in characters of each free-text field (after stripping spaces)."""
ZERO_ADDRESS = "0x" + "0" * 40

_ADDRESS = re.compile(r"0x[0-9a-f]{40}")
_HASH = re.compile(r"0x[0-9a-f]{64}")
_HEX = re.compile(r"0x[0-9a-f]*")

MAX_TIMESTAMP_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
"""The latest plausible trade time, in unix milliseconds (a seconds value is taken as such
when below :data:`MIN_TIMESTAMP_MS`)."""
MIN_TIMESTAMP_MS = 100_000_000_000  # 1973-03-03 in ms; 5138 in seconds
MAX_QUANTITY = 1e30
"""The largest price, amount or quote volume of a trade (uint256 amounts of 18-decimal tokens
reach 1e59 wei, but 1e41 units of anything is not a trade)."""
TRADE_SIDES = frozenset({"buy", "sell"})

DexKind = Literal["swap", "mint", "burn", "sync", "transfer"]
DEX_KINDS: frozenset[str] = frozenset({"swap", "mint", "burn", "sync", "transfer"})


# -- field parsers: each takes (field name, raw value) and returns the typed value -------------


def _fail(code: str, name: str, value: object, why: str) -> RecordError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return RecordError(code, f"field {name!r}: {why} (got {shown})", field=name, value=value)


def parse_uint(name: str, value: object, maximum: int = UINT256_MAX) -> int:
    """An unsigned integer from an int, a decimal string or a 0x-hex string."""
    # fast path, the wire's own forms: an int (exactly: no bool) or plain ASCII decimal digits
    if type(value) is int and 0 <= value <= maximum:
        return value
    if type(value) is str and value.isascii() and value.isdigit():
        number = int(value)
        if number <= maximum:
            return number
    if isinstance(value, bool):
        raise _fail("bad_type", name, value, "expected an unsigned integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            if text.lower().startswith("0x"):
                number = int(text, 16)
            elif text.lstrip("-").isdigit() and text.isascii():
                number = int(text, 10)
            else:
                raise ValueError(text)
        except ValueError:
            raise _fail("bad_type", name, value, "expected an integer") from None
    elif isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        number = int(value)  # pandas turns nullable int columns into floats
    else:
        raise _fail("bad_type", name, value, "expected an unsigned integer")
    if number < 0:
        raise _fail("negative_amount", name, value, "must not be negative")
    if number > maximum:
        raise _fail("bad_value", name, value, f"exceeds {maximum.bit_length()}-bit range")
    return number


def parse_uint64(name: str, value: object) -> int:
    if type(value) is int and 0 <= value <= UINT64_MAX:
        return value
    return parse_uint(name, value, UINT64_MAX)


def parse_block(name: str, value: object) -> int:
    """A block number: an unsigned integer no larger than :data:`MAX_BLOCK_NUMBER`."""
    if type(value) is int and 0 <= value <= MAX_BLOCK_NUMBER:
        return value
    number = parse_uint64(name, value)
    if number > MAX_BLOCK_NUMBER:
        raise _fail("bad_value", name, value, "is not a plausible block number (the maximum "
                    "is 10**12); fix or drop the record")
    return number


def parse_timestamp(name: str, value: object) -> int:
    """Unix seconds from an int or an ISO-8601 / BigQuery ``YYYY-MM-DD HH:MM:SS UTC`` string."""
    if type(value) is int and 0 <= value <= UINT64_MAX:
        return value
    if isinstance(value, str) and not value.strip().isdigit():
        text = value.strip().removesuffix(" UTC").replace("Z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise _fail("bad_type", name, value, "expected unix seconds or an ISO time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = int(moment.timestamp())
        if seconds < 0:
            raise _fail("bad_value", name, value, "is before 1970")
        return seconds
    return parse_uint64(name, value)


def parse_address(name: str, value: object) -> str:
    if type(value) is str and len(value) == 42 and _ADDRESS.fullmatch(value):
        return value  # already canonical: 0x and 40 lowercase hex digits
    if not isinstance(value, str):
        raise _fail("bad_type", name, value, "expected a 0x-prefixed 20-byte hex address")
    if len(value) > 84:  # surrounding spaces are tolerated, not a page of them
        raise _fail("bad_value", name, value, "expected a 0x-prefixed 20-byte hex address")
    text = value.strip().lower()
    if not _ADDRESS.fullmatch(text):
        raise _fail("bad_value", name, value, "expected a 0x-prefixed 20-byte hex address")
    return text


def parse_optional_address(name: str, value: object) -> str | None:
    return None if value is None or value == "" else parse_address(name, value)


def parse_hash(name: str, value: object) -> str:
    if type(value) is str and len(value) == 66 and _HASH.fullmatch(value):
        return value
    if not isinstance(value, str):
        raise _fail("bad_type", name, value, "expected a 0x-prefixed 32-byte hex hash")
    if len(value) > 132:
        raise _fail("bad_value", name, value, "expected a 0x-prefixed 32-byte hex hash")
    text = value.strip().lower()
    if not _HASH.fullmatch(text):
        raise _fail("bad_value", name, value, "expected a 0x-prefixed 32-byte hex hash")
    return text


def parse_hex_data(name: str, value: object) -> str:
    if value is None:
        return "0x"
    if not isinstance(value, str):
        raise _fail("bad_type", name, value, "expected 0x-prefixed hex data")
    text = value.strip().lower()
    if len(text) > MAX_INPUT_CHARS:
        raise _fail("too_long", name, value, f"is {len(text)} characters, over the "
                    f"{MAX_INPUT_CHARS}-character limit (a record is at most "
                    f"{MAX_RECORD_BYTES} bytes)")
    if not _HEX.fullmatch(text) or len(text) % 2:
        raise _fail("bad_value", name, value, "expected 0x-prefixed hex data of whole bytes")
    return text


def parse_kind(name: str, value: object) -> str:
    if not isinstance(value, str) or len(value) > 16 or value.lower() not in DEX_KINDS:
        raise _fail("bad_value", name, value, f"expected one of {', '.join(sorted(DEX_KINDS))}")
    return value.lower()


def parse_text(name: str, value: object) -> str:
    """A non-empty string, stripped, of at most ``TEXT_LIMITS[name]`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise _fail("bad_type", name, value, "expected a non-empty string")
    text = value.strip()
    limit = TEXT_LIMITS[name]
    if len(text) > limit:
        raise _fail("too_long", name, value, f"is {len(text)} characters, over the "
                    f"{limit}-character limit; shorten it")
    return text


def parse_quantity(name: str, value: object) -> float:
    """A finite, non-negative float (prices and amounts of exchange trades) from a number or
    a decimal string, at most :data:`MAX_QUANTITY`."""
    if type(value) is float and 0.0 <= value <= MAX_QUANTITY:
        return value  # the wire's own form (NaN fails both comparisons)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _fail("bad_type", name, value, "expected a number")
    if isinstance(value, str) and len(value) > 64:
        raise _fail("bad_value", name, value, "expected a decimal number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise _fail("bad_type", name, value, "expected a decimal number") from None
    if not math.isfinite(number):
        raise _fail("bad_value", name, value, "must be a finite number")
    if number < 0:
        raise _fail("negative_amount", name, value, "must not be negative")
    if number > MAX_QUANTITY:
        raise _fail("bad_value", name, value, f"exceeds {MAX_QUANTITY:g}")
    return number


def parse_price(name: str, value: object) -> float:
    price = parse_quantity(name, value)
    if price <= 0.0:
        raise _fail("bad_value", name, value, "a trade's price must be positive")
    return price


def parse_timestamp_ms(name: str, value: object) -> int:
    """Unix milliseconds (ccxt's ``timestamp``) from an int, or an ISO-8601 string; an integer
    below :data:`MIN_TIMESTAMP_MS` is taken as unix seconds."""
    if type(value) is int and MIN_TIMESTAMP_MS <= value <= MAX_TIMESTAMP_MS:
        return value
    if isinstance(value, str) and not value.strip().isdigit():
        text = value.strip().removesuffix(" UTC").replace("Z", "+00:00")
        if len(text) > 64:
            raise _fail("bad_type", name, value, "expected unix milliseconds or an ISO time")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise _fail("bad_type", name, value, "expected unix milliseconds or an ISO "
                        "time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        millis = round(moment.timestamp() * 1000)
    else:
        millis = parse_uint64(name, value)
        if millis < MIN_TIMESTAMP_MS:
            millis *= 1000  # unix seconds
    if not 0 <= millis <= MAX_TIMESTAMP_MS:
        raise _fail("bad_value", name, value, "is not a time between 1970 and 2100")
    return millis


def parse_side(name: str, value: object) -> str:
    if not isinstance(value, str) or len(value) > 8 or value.strip().lower() not in TRADE_SIDES:
        raise _fail("bad_value", name, value, "expected buy or sell (the taker's side)")
    return value.strip().lower()


def parse_flag(name: str, value: object) -> int:
    return parse_uint(name, value, 1)


def _optional(parser: Any) -> Any:
    def parse(name: str, value: object) -> Any:
        if value is None or value == "":
            return None
        return parser(name, value)

    return parse


_ABSENT = object()

# -- records -----------------------------------------------------------------------------------


class Record:
    """Shared behaviour of chain records: validation from a mapping, dict export, item id."""

    __slots__ = ()

    record_type: ClassVar[str]
    _parsers: ClassVar[dict[str, Any]]
    _required: ClassVar[frozenset[str]]
    amount_fields: ClassVar[frozenset[str]]  # uint256 fields: decimal strings on the wire

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Validate ``data`` and build the record; unknown keys are ignored."""
        if not isinstance(data, Mapping):
            raise RecordError("bad_type", f"a {cls.record_type} must be an object, not "
                              f"{type(data).__name__}", value=data)
        values: dict[str, Any] = {}
        required = cls._required
        get = data.get
        for name, parser in cls._parsers.items():
            value = get(name, _ABSENT)
            if value is _ABSENT or (value is None and name in required):
                if name in required:
                    raise RecordError("missing_field", f"field {name!r} is missing", field=name)
                continue
            values[name] = parser(name, value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (ints stay ints), in field order."""
        return {name: getattr(self, name) for name in self._parsers}

    @property
    def item_id(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Transaction(Record):
    """An Ethereum transaction with its receipt status (ethereum-etl ``transactions``)."""

    hash: str
    nonce: int
    block_number: int
    block_timestamp: int
    transaction_index: int
    from_address: str
    to_address: str | None  # None for a contract creation
    value: int
    gas: int
    gas_price: int
    input: str = "0x"
    receipt_gas_used: int | None = None
    receipt_status: int | None = None
    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    transaction_type: int | None = None

    record_type: ClassVar[str] = "transaction"
    _parsers: ClassVar[dict[str, Any]] = {
        "hash": parse_hash,
        "nonce": parse_uint64,
        "block_number": parse_block,
        "block_timestamp": parse_timestamp,
        "transaction_index": parse_uint64,
        "from_address": parse_address,
        "to_address": parse_optional_address,
        "value": parse_uint,
        "gas": parse_uint64,
        "gas_price": parse_uint,
        "input": parse_hex_data,
        "receipt_gas_used": _optional(parse_uint64),
        "receipt_status": _optional(parse_uint64),
        "max_fee_per_gas": _optional(parse_uint),
        "max_priority_fee_per_gas": _optional(parse_uint),
        "transaction_type": _optional(parse_uint64),
    }
    _required: ClassVar[frozenset[str]] = frozenset(
        {"hash", "nonce", "block_number", "block_timestamp", "transaction_index",
         "from_address", "value", "gas", "gas_price"}
    )
    amount_fields: ClassVar[frozenset[str]] = frozenset(
        {"value", "gas_price", "max_fee_per_gas", "max_priority_fee_per_gas"}
    )

    @property
    def item_id(self) -> str:
        return f"transaction_{self.hash}"

    @property
    def key(self) -> str:
        """Partition key: everything about one sender lands on one partition."""
        return self.from_address


@dataclass(frozen=True, slots=True)
class DexEvent(Record):
    """A swap, liquidity add (mint) or remove (burn), or reserves sync of one pool.

    Amounts are in each token's smallest unit. ``reserve0``/``reserve1`` are the pool's
    reserves after the event (zero when the source does not say); ``liquidity`` is the LP
    tokens minted, burned or moved. ``transfer`` is a move of the pool's LP token between
    holders (``sender`` → ``to``), neither a mint nor a burn.
    """

    pool_address: str
    token0: str
    token1: str
    kind: str
    block_number: int
    block_timestamp: int
    transaction_hash: str
    log_index: int
    amount0_in: int = 0
    amount1_in: int = 0
    amount0_out: int = 0
    amount1_out: int = 0
    reserve0: int = 0
    reserve1: int = 0
    sender: str | None = None
    to: str | None = None
    liquidity: int = 0
    transaction_index: int | None = None

    record_type: ClassVar[str] = "dex_event"
    _parsers: ClassVar[dict[str, Any]] = {
        "pool_address": parse_address,
        "token0": parse_address,
        "token1": parse_address,
        "kind": parse_kind,
        "block_number": parse_block,
        "block_timestamp": parse_timestamp,
        "transaction_hash": parse_hash,
        "log_index": parse_uint64,
        "amount0_in": parse_uint,
        "amount1_in": parse_uint,
        "amount0_out": parse_uint,
        "amount1_out": parse_uint,
        "reserve0": parse_uint,
        "reserve1": parse_uint,
        "sender": parse_optional_address,
        "to": parse_optional_address,
        "liquidity": parse_uint,
        "transaction_index": _optional(parse_uint64),
    }
    _required: ClassVar[frozenset[str]] = frozenset(
        {"pool_address", "token0", "token1", "kind", "block_number", "block_timestamp",
         "transaction_hash", "log_index"}
    )
    amount_fields: ClassVar[frozenset[str]] = frozenset(
        {"amount0_in", "amount1_in", "amount0_out", "amount1_out", "reserve0", "reserve1",
         "liquidity"}
    )

    @property
    def item_id(self) -> str:
        return f"log_{self.transaction_hash}_{self.log_index}"

    @property
    def key(self) -> str:
        """Partition key: everything about one pool lands on one partition."""
        return self.pool_address


@dataclass(frozen=True, slots=True)
class TokenTransfer(Record):
    """An ERC-20 ``Transfer`` log (ethereum-etl ``token_transfers``); on the transactions
    topic, keyed by sender."""

    token_address: str
    from_address: str
    to_address: str
    value: int
    transaction_hash: str
    log_index: int
    block_number: int
    block_timestamp: int | None = None  # ethereum-etl's CSV export has no timestamp

    record_type: ClassVar[str] = "token_transfer"
    _parsers: ClassVar[dict[str, Any]] = {
        "token_address": parse_address,
        "from_address": parse_address,
        "to_address": parse_address,
        "value": parse_uint,
        "transaction_hash": parse_hash,
        "log_index": parse_uint64,
        "block_number": parse_block,
        "block_timestamp": _optional(parse_timestamp),
    }
    _required: ClassVar[frozenset[str]] = frozenset(
        {"token_address", "from_address", "to_address", "value", "transaction_hash",
         "log_index", "block_number"}
    )
    amount_fields: ClassVar[frozenset[str]] = frozenset({"value"})

    @property
    def item_id(self) -> str:
        return f"token_transfer_{self.transaction_hash}_{self.log_index}"

    @property
    def key(self) -> str:
        return self.from_address


@dataclass(frozen=True, slots=True)
class Label(Record):
    """Delayed ground truth about a subject (an item id, an address or a pool), published on
    ``chainwatch.labels``. ``released_block`` is the stream time at which the label became
    known; ``block_number`` is that of the labelled event.

    It is keyed by ``partition_key`` when given — the key of the labelled record (for a
    transaction, its sender) — so that, the topics having equal partition counts, a label
    lands on the same partition number as what it labels and reaches the scorer task that
    holds its features. Without it, the key is the subject.
    """

    subject: str
    label: int  # 1: fraud (scam, phishing, rug pull, ...), 0: legitimate
    source: str
    block_number: int
    released_block: int
    partition_key: str | None = None

    record_type: ClassVar[str] = "label"
    _parsers: ClassVar[dict[str, Any]] = {
        "subject": parse_text,
        "label": parse_flag,
        "source": parse_text,
        "block_number": parse_block,
        "released_block": parse_block,
        "partition_key": _optional(parse_text),
    }
    _required: ClassVar[frozenset[str]] = frozenset(
        {"subject", "label", "source", "block_number", "released_block"})
    amount_fields: ClassVar[frozenset[str]] = frozenset()

    @property
    def item_id(self) -> str:
        return f"label_{self.source}_{self.subject}"

    @property
    def key(self) -> str:
        return self.partition_key or self.subject


@dataclass(frozen=True, slots=True)
class Trade(Record):
    """One trade of an exchange's market or of a DEX pool, in the shape of ccxt's
    ``fetch_trades``: the taker's ``side``, ``price`` in quote units per base unit, ``amount``
    in base units, ``quote_volume`` (ccxt's ``cost``) in quote units, ``timestamp`` in unix
    milliseconds. Prices and amounts are floats, as exchanges give them.

    ``stream`` names the series the trade belongs to when it is not simply its market (a
    replay window, say); the trade is keyed by it, else by ``venue:market``, so that every
    trade of one series lands on one partition in order. A DEX trade also carries its pool,
    block, transaction and log index; a CEX trade has no block, its stream time is its
    timestamp.

    The ``item_id`` is the venue's trade id when there is one, the log for a DEX trade, and
    otherwise a digest of every field: a row fetched twice is the same trade.

    >>> t = Trade.from_dict({"venue": "binance", "market": "NAS/BTC", "side": "buy",
    ...     "price": "0.0000125", "amount": 400, "quote_volume": 0.005,
    ...     "timestamp": "2021-11-14T15:00:01.250Z"})
    >>> t.timestamp, t.key, t.time_s
    (1636902001250, 'binance:NAS/BTC', 1636902001)
    """

    venue: str
    market: str
    side: str
    price: float
    amount: float
    quote_volume: float
    timestamp: int  # unix milliseconds
    trade_id: str | None = None
    taker: str | None = None
    stream: str | None = None
    pool_address: str | None = None
    block_number: int | None = None
    transaction_hash: str | None = None
    log_index: int | None = None

    record_type: ClassVar[str] = "trade"
    _parsers: ClassVar[dict[str, Any]] = {
        "venue": parse_text,
        "market": parse_text,
        "side": parse_side,
        "price": parse_price,
        "amount": parse_quantity,
        "quote_volume": parse_quantity,
        "timestamp": parse_timestamp_ms,
        "trade_id": _optional(parse_text),
        "taker": _optional(parse_text),
        "stream": _optional(parse_text),
        "pool_address": parse_optional_address,
        "block_number": _optional(parse_block),
        "transaction_hash": _optional(parse_hash),
        "log_index": _optional(parse_uint64),
    }
    _required: ClassVar[frozenset[str]] = frozenset(
        {"venue", "market", "side", "price", "amount", "quote_volume", "timestamp"})
    amount_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """As :meth:`Record.from_dict`, with a fast path for a trade as the wire carries it
        (stripped text within its limits, float quantities, an int timestamp in ms, no
        optional field but a stream): the same checks in a few comparisons; anything else
        takes the general path, which names what is wrong."""
        if type(data) is dict:
            get = data.get
            venue, market, side = get("venue"), get("market"), get("side")
            price, amount, quote = get("price"), get("amount"), get("quote_volume")
            ms, stream = get("timestamp"), get("stream")
            if (_clean(venue, _VENUE_MAX) and _clean(market, _MARKET_MAX)
                    and side in TRADE_SIDES
                    and type(price) is float and 0.0 < price <= MAX_QUANTITY
                    and type(amount) is float and 0.0 <= amount <= MAX_QUANTITY
                    and type(quote) is float and 0.0 <= quote <= MAX_QUANTITY
                    and type(ms) is int and MIN_TIMESTAMP_MS <= ms <= MAX_TIMESTAMP_MS
                    and (stream is None or _clean(stream, _STREAM_MAX))
                    and get("trade_id") is None and get("taker") is None
                    and get("pool_address") is None and get("block_number") is None
                    and get("transaction_hash") is None and get("log_index") is None):
                return cls(venue, market, side, price, amount, quote, ms, stream=stream)
        return super(Trade, cls).from_dict(data)  # slots dataclass: no zero-argument super()

    @property
    def item_id(self) -> str:
        if self.trade_id is not None:
            return f"trade_{self.venue}_{self.market}_{self.trade_id}"
        if self.transaction_hash is not None and self.log_index is not None:
            return f"trade_{self.transaction_hash}_{self.log_index}"
        fields = (self.stream or "", self.venue, self.market, self.side, repr(self.price),
                  repr(self.amount), repr(self.quote_volume), str(self.timestamp),
                  self.taker or "")
        digest = hashlib.sha256("\x1f".join(fields).encode()).hexdigest()[:32]
        return f"trade_{digest}"

    @property
    def key(self) -> str:
        """Partition key: every trade of one series (``stream``, else venue and market) lands
        on one partition."""
        return self.stream or f"{self.venue}:{self.market}"

    @property
    def time_s(self) -> int:
        """Stream time in unix seconds: what labels of trades count in."""
        return self.timestamp // 1000


_VENUE_MAX, _MARKET_MAX, _STREAM_MAX = (TEXT_LIMITS[k] for k in ("venue", "market", "stream"))


def _clean(text: object, limit: int) -> TypeGuard[str]:
    """Whether ``text`` is a non-empty string of at most ``limit`` characters, stripped."""
    return type(text) is str and 0 < len(text) <= limit and text.strip() == text


@dataclass(frozen=True, slots=True)
class Retraction(Record):
    """Block ``block_number`` (hash ``block_hash``) was orphaned by a reorg: the records a live
    source wrote from it are void. It is sent to every partition of every topic the source
    wrote that block's records to, after them and before the new branch's records of that
    height, so each scorer task sees it in order with what it retracts.

    ``reason`` says why (``reorg``, with the new branch's hash of the height: ``reorg
    replaced by 0x…``)."""

    block_number: int
    block_hash: str
    reason: str

    record_type: ClassVar[str] = "retraction"
    _parsers: ClassVar[dict[str, Any]] = {
        "block_number": parse_block,
        "block_hash": parse_hash,
        "reason": parse_text,
    }
    _required: ClassVar[frozenset[str]] = frozenset({"block_number", "block_hash", "reason"})
    amount_fields: ClassVar[frozenset[str]] = frozenset()

    @property
    def item_id(self) -> str:
        return f"retraction_{self.block_hash}"

    @property
    def key(self) -> str:
        return self.block_hash


ChainRecord = Transaction | DexEvent | TokenTransfer | Label | Trade | Retraction
RECORD_TYPES: dict[str, type[Transaction] | type[DexEvent] | type[TokenTransfer] | type[Label]
                   | type[Trade] | type[Retraction]] = {
    cls.record_type: cls
    for cls in (Transaction, DexEvent, TokenTransfer, Label, Trade, Retraction)
}
