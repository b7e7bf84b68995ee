"""Replay formats: the same export as CSV, JSONL and Parquet gives the same records."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import RecordError, SourceError
from pipeline.records import DexEvent, Label, Transaction
from producers.files import count_rows, read_rows, source_files
from producers.formats import BURN, MINT, SWAP, SYNC, Blte, UniswapV2, make_format

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
POOL = "0x" + "ab" * 20
TOKEN0, TOKEN1 = "0x" + "01" * 20, "0x" + "02" * 20


def _h(i: int) -> str:
    return "0x" + f"{i:064x}"


def _word(n: int) -> str:
    return f"{n:064x}"


TRANSACTIONS = [
    {"hash": _h(i), "nonce": str(i), "block_number": str(100 + i // 2),
     "block_timestamp": str(1_600_000_000 + 12 * (i // 2)), "transaction_index": str(i % 2),
     "from_address": "0x" + f"{i % 3:040x}", "to_address": "" if i == 3 else "0x" + "cd" * 20,
     "value": str(10**24 + i), "gas": "21000", "gas_price": str(30 * 10**9),
     "input": "0x", "receipt_gas_used": "21000", "receipt_status": "1",
     "max_fee_per_gas": "" if i % 2 else str(40 * 10**9),
     "max_priority_fee_per_gas": "" if i % 2 else "1000000000", "transaction_type": "2"}
    for i in range(6)
]
LOGS = [
    {"log_index": "0", "transaction_hash": _h(1), "transaction_index": "0",
     "block_number": "100", "block_timestamp": "1600000000", "address": POOL,
     "data": "0x" + _word(5 * 10**21) + _word(7 * 10**18), "topics": SYNC},
    {"log_index": "1", "transaction_hash": _h(1), "transaction_index": "0",
     "block_number": "100", "block_timestamp": "1600000000", "address": POOL,
     "data": "0x" + _word(0) + _word(10**18) + _word(9 * 10**20) + _word(0),
     "topics": ",".join([SWAP, "0x" + "0" * 24 + "11" * 20, "0x" + "0" * 24 + "22" * 20])},
    {"log_index": "2", "transaction_hash": _h(2), "transaction_index": "1",
     "block_number": "101", "block_timestamp": "1600000012", "address": POOL,
     "data": "0x" + _word(10**20) + _word(10**17), "topics": ",".join([MINT, "0x" + "0" * 64])},
    {"log_index": "3", "transaction_hash": _h(2), "transaction_index": "1",
     "block_number": "101", "block_timestamp": "1600000012", "address": POOL,
     "data": "0x" + _word(10**19) + _word(10**16),
     "topics": ",".join([BURN, "0x" + "0" * 64, "0x" + "0" * 24 + "33" * 20])},
    {"log_index": "4", "transaction_hash": _h(3), "transaction_index": "0",
     "block_number": "102", "block_timestamp": "1600000024", "address": "0x" + "ee" * 20,
     "data": "0x", "topics": "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"},
    {"log_index": "5", "transaction_hash": _h(2), "transaction_index": "1",
     "block_number": "101", "block_timestamp": "1600000012", "address": POOL,
     "data": "0x" + _word(10**18), "topics": ",".join([
         "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef", "0x" + "0" * 64,
         "0x" + "0" * 24 + "33" * 20])},
]


def _write_all(tmp: Path, name: str, rows: list[dict[str, str]]) -> dict[str, Path]:
    """The same export in the three formats ethereum-etl and BigQuery write."""
    paths = {k: tmp / f"{name}.{k}" for k in ("csv", "jsonl", "parquet")}
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def typed(row: dict[str, str]) -> dict[str, Any]:  # JSON exports carry numbers and lists
        out: dict[str, Any] = {}
        for k, v in row.items():
            if k == "topics":
                out[k] = v.split(",")
            elif v.isdigit():
                out[k] = int(v)
            else:
                out[k] = v or None
        return out

    paths["jsonl"].write_text("".join(json.dumps(typed(r)) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), paths["parquet"])
    return paths


def _records(fmt_name: str, path: Path, **kwargs: Any) -> list[object]:
    fmt = make_format(fmt_name, **kwargs)
    out: list[object] = []
    for row in read_rows(fmt.files(path)):
        mapped = fmt.map(row)
        out.append(None if mapped is None else mapped.records)
    return out


def test_transactions_identical_across_csv_jsonl_parquet(tmp_path: Path) -> None:
    paths = _write_all(tmp_path, "transactions", TRANSACTIONS)
    results = {k: _records("transactions", p) for k, p in paths.items()}
    assert results["csv"] == results["jsonl"] == results["parquet"]
    txs = [r[0] for r in results["csv"]]  # type: ignore[index]
    assert all(isinstance(t, Transaction) for t in txs)
    assert txs[3].to_address is None and txs[1].max_fee_per_gas is None
    assert txs[5].value == 10**24 + 5


def test_logs_decode_uniswap_events_identically(tmp_path: Path) -> None:
    pools = tmp_path / "pools.csv"
    pools.write_text(f"pool_address,token0,token1\n{POOL},{TOKEN0},{TOKEN1}\n")
    paths = _write_all(tmp_path, "logs", LOGS)
    results = {k: _records("logs", p, pools=pools) for k, p in paths.items()}
    assert results["csv"] == results["jsonl"] == results["parquet"]
    events = results["csv"]
    assert events[4] is None  # an ERC-20 Transfer of another contract: skipped
    assert events[2] is None and events[3] is None  # the pair's Mint and Burn logs: nothing
    sync, swap = (e[0] for e in events[:2])  # type: ignore[index]
    assert isinstance(sync, DexEvent) and (sync.reserve0, sync.reserve1) == (5 * 10**21,
                                                                             7 * 10**18)
    assert swap.kind == "swap" and swap.amount1_in == 10**18 and swap.to == "0x" + "22" * 20
    (lp_mint,) = events[5]  # type: ignore[misc]
    assert lp_mint.kind == "mint" and lp_mint.liquidity == 10**18  # its LP Transfer from zero
    assert lp_mint.to == "0x" + "33" * 20 and lp_mint.block_timestamp == 1_600_000_012
    assert swap.token0 == TOKEN0 and swap.item_id == f"log_{_h(1)}_1"


def test_logs_need_a_pools_file() -> None:
    with pytest.raises(SourceError, match="--pools"):
        make_format("logs")


def test_unknown_format_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unknown format 'nope'; choose one of"):
        make_format("nope")
    with pytest.raises(SourceError, match="does not exist"):
        source_files(tmp_path / "missing.csv")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match=r"no \.csv, \.jsonl or \.parquet"):
        source_files(tmp_path)


def test_malformed_rows_are_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_text("a,b\n1,2\n3\n4,5\n")
    rows = list(read_rows([path]))
    assert count_rows([path]) == len(rows) == 3
    bad = [r for r in rows if r.error]
    assert [(r.line, r.raw) for r in bad] == [(3, b"3")]
    assert sorted(r.line for r in rows if not r.error) == [2, 4]
    jsonl = tmp_path / "tx.jsonl"
    jsonl.write_text('{"a": 1}\nnot json\n[1]\n\n{"a": 2}\n')
    rows = list(read_rows([jsonl]))
    assert [(r.line, r.error is None) for r in rows] == [(1, True), (2, False), (3, False),
                                                         (5, True)]


def test_folder_is_read_in_natural_order(tmp_path: Path) -> None:
    for start in (0, 1000, 200):
        (tmp_path / f"blocks_{start}.jsonl").write_text(json.dumps({"start": start}) + "\n")
    assert [r.values["start"] for r in read_rows(source_files(tmp_path))] == [0, 200, 1000]


def test_uniswap_v2_maps_sync_mint_burn_and_lp_transfers() -> None:
    fmt = UniswapV2()
    files = fmt.files(DATA / "uniswap-v2-2021")
    kinds: dict[str, int] = {}
    for row in read_rows(files):
        if row.number > 5000:
            break
        mapped = fmt.map(row)
        event = mapped.records[0]
        assert isinstance(event, DexEvent)
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
        if row.values["event"] == "Sync":
            assert event.reserve0 == int(row.values["reserve0"])
        else:
            assert event.liquidity == int(row.values["value"])
    assert kinds["sync"] > kinds["mint"] > 0 and kinds["burn"] > 0


def test_blte_takes_integral_floats_and_delays_labels() -> None:
    fmt = Blte(label_delay_blocks=100)
    rows = list(read_rows([DATA / "blte-ethereum-scam-tx" / "transactions.csv"]))[:50]
    first = fmt.map(rows[0])
    tx, label = first.records[0], first.labels[0]
    assert isinstance(tx, Transaction) and isinstance(label, Label)
    assert tx.value == 1_800_000_000_000_000_000  # "1.8e+18" in the file
    assert label.subject == tx.item_id and label.released_block == tx.block_number + 100
    assert fmt.map(rows[0]) == first  # pure: a re-sent row is the same record
    bad = rows[0].__class__(1, "x.csv", 2, rows[0].values | {"value": "1.5"})
    with pytest.raises(RecordError, match="not a whole number"):
        fmt.map(bad)
