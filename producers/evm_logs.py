"""Ethereum logs as chainwatch records: ERC-20 transfers and Uniswap-V2 pair events, decoded
the same way for the live source (:mod:`producers.rpc`) and the ethereum-etl ``logs``
replay format (:mod:`producers.formats`), so a chain followed live and the same chain
exported and replayed give the same records.

=====================  ==================================================================
log                    record
=====================  ==================================================================
ERC-20 ``Transfer``    a token transfer (three topics, one word of data; ERC-721's four
                       topics are not ERC-20)
a pair's ``Sync``      DexEvent ``sync``: the reserves after the transaction
a pair's ``Swap``      DexEvent ``swap``
a pair's LP            DexEvent ``mint`` (from the zero address), ``burn`` (to the zero
``Transfer``           address or the pair) or ``transfer`` (between holders), with the LP
                       amount: the uniswap-v2 format's reading, which the DEX detectors
                       were tuned on
a pair's ``Mint``,     nothing: their amounts are the ``Sync``'s change of reserves, and the
``Burn``               LP ``Transfer`` says who and how much liquidity
=====================  ==================================================================
"""

from __future__ import annotations

from typing import Any

from pipeline.records import ZERO_ADDRESS, ChainRecord, DexEvent, TokenTransfer

# keccak-256 of the event signatures (topic 0)
TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
PAIR_CREATED = "0x0d3648bd0f6ba80134a33ba9275ac585d9d315f0ad8355cddefde31afa28d0e9"
SYNC = "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"
SWAP = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
MINT = "0x4c209b5fc8ad50758f13e2e1088ba56a560dff690a1c6fef26394f4c03821c4f"
BURN = "0xdccd412f0b1252819cb1fd330b93224ca42612892bb3f4f789976e6d81936496"
PAIR_EVENTS = frozenset({SYNC, SWAP, MINT, BURN})


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _address(topic: str) -> str:
    return "0x" + topic[-40:].lower()


def _words(data: str) -> list[int]:
    body = data[2:] if data.startswith("0x") else data
    return [int(body[i:i + 64], 16) for i in range(0, len(body) - 63, 64)]


def log_records(entry: dict[str, Any], timestamp: int, pools: dict[str, tuple[str, str]]
                ) -> list[ChainRecord]:
    """What one log becomes: a token transfer and, for a known pair, its DEX event.

    ``entry`` is a log as JSON-RPC gives it (``address``, ``topics``, ``data``,
    ``blockNumber``, ``transactionHash``, ``logIndex``, ``transactionIndex``; numbers as hex
    strings or ints); ``pools`` maps a pair's address to its (token0, token1)."""
    topics = [t.lower() for t in entry.get("topics") or []]
    if not topics:
        return []
    address = entry["address"].lower()
    data = entry.get("data") or "0x"
    base = {"block_number": _int(entry["blockNumber"]), "transaction_hash": entry[
        "transactionHash"], "log_index": _int(entry["logIndex"])}
    out: list[ChainRecord] = []
    words = _words(data)
    if topics[0] == TRANSFER and len(topics) == 3 and len(words) == 1:
        src, dst = _address(topics[1]), _address(topics[2])
        out.append(TokenTransfer.from_dict(base | {
            "token_address": address, "from_address": src, "to_address": dst,
            "value": words[0], "block_timestamp": timestamp}))
        if address in pools:
            kind = ("mint" if src == ZERO_ADDRESS else
                    "burn" if dst in (ZERO_ADDRESS, address) else "transfer")
            out.append(_dex(address, pools, base, timestamp, entry, kind=kind,
                            liquidity=words[0], sender=src, to=dst))
    elif address in pools and topics[0] == SYNC and len(words) >= 2:
        out.append(_dex(address, pools, base, timestamp, entry, kind="sync",
                        reserve0=words[0], reserve1=words[1]))
    elif address in pools and topics[0] == SWAP and len(words) >= 4 and len(topics) >= 3:
        out.append(_dex(address, pools, base, timestamp, entry, kind="swap",
                        amount0_in=words[0], amount1_in=words[1], amount0_out=words[2],
                        amount1_out=words[3], sender=_address(topics[1]),
                        to=_address(topics[2])))
    return out


def _dex(pool: str, pools: dict[str, tuple[str, str]], base: dict[str, Any], timestamp: int,
         entry: dict[str, Any], **fields: Any) -> DexEvent:
    token0, token1 = pools[pool]
    index = entry.get("transactionIndex")
    return DexEvent.from_dict(base | fields | {
        "pool_address": pool, "token0": token0, "token1": token1, "block_timestamp": timestamp,
        "transaction_index": None if index is None else _int(index)})
