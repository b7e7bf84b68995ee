"""The live source's parts that need no node: decoding, retries and pacing, the cursor, and
what is never shown of a URL. (Following a real node: tests/integration/test_rpc_anvil.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import SourceError
from pipeline.jsonrpc import Rpc, _scrub, shown_url
from pipeline.records import DexEvent, TokenTransfer
from producers.evm_logs import SWAP, SYNC, TRANSFER, log_records
from producers.rpc import CursorState, Kept, RpcCursor, RpcSummary, transaction

POOL, T0, T1 = "0x" + "aa" * 20, "0x" + "01" * 20, "0x" + "02" * 20
ALICE, BOB = "0x" + "a1" * 20, "0x" + "b0" * 20
ZERO = "0x" + "00" * 20


def _topic(address: str) -> str:
    return "0x" + "0" * 24 + address[2:]


def _word(n: int) -> str:
    return f"{n:064x}"


def _log(address: str, topics: list[str], words: list[int], index: int = 3) -> dict[str, Any]:
    return {"address": address, "topics": topics, "data": "0x" + "".join(map(_word, words)),
            "blockNumber": "0x10", "transactionHash": "0x" + "ee" * 32,
            "logIndex": hex(index), "transactionIndex": "0x1"}


def test_a_transaction_with_its_receipt() -> None:
    tx = {"hash": "0x" + "ab" * 32, "nonce": "0x2", "blockNumber": "0x10",
          "transactionIndex": "0x1", "from": ALICE, "to": None, "value": hex(10**18),
          "gas": "0x5208", "gasPrice": "0x3b9aca00", "input": "0x60", "type": "0x2",
          "maxFeePerGas": "0x77359400", "maxPriorityFeePerGas": "0x1"}
    t = transaction(tx, 1_700_000_000, {"gasUsed": "0x5000", "status": "0x0"})
    assert (t.block_number, t.block_timestamp, t.to_address, t.value) == (
        16, 1_700_000_000, None, 10**18)
    assert (t.receipt_gas_used, t.receipt_status, t.transaction_type) == (0x5000, 0, 2)
    assert t.item_id == "transaction_0x" + "ab" * 32


def test_logs_become_token_transfers_and_a_known_pairs_events() -> None:
    pools = {POOL: (T0, T1)}
    (transfer,) = log_records(_log(T0, [TRANSFER, _topic(ALICE), _topic(BOB)], [5]), 7, pools)
    assert isinstance(transfer, TokenTransfer)
    assert (transfer.token_address, transfer.from_address, transfer.to_address,
            transfer.value, transfer.block_timestamp) == (T0, ALICE, BOB, 5, 7)
    lp_mint = log_records(_log(POOL, [TRANSFER, _topic(ZERO), _topic(ALICE)], [1000]), 7, pools)
    assert [type(r).__name__ for r in lp_mint] == ["TokenTransfer", "DexEvent"]
    dex = lp_mint[1]
    assert isinstance(dex, DexEvent) and (dex.kind, dex.liquidity, dex.to) == ("mint", 1000,
                                                                             ALICE)
    burn = log_records(_log(POOL, [TRANSFER, _topic(ALICE), _topic(POOL)], [9]), 7, pools)[1]
    moved = log_records(_log(POOL, [TRANSFER, _topic(ALICE), _topic(BOB)], [9]), 7, pools)[1]
    assert isinstance(burn, DexEvent) and isinstance(moved, DexEvent)
    assert (burn.kind, moved.kind) == ("burn", "transfer")
    (sync,) = log_records(_log(POOL, [SYNC], [11, 22]), 7, pools)
    assert isinstance(sync, DexEvent) and (sync.kind, sync.reserve0, sync.reserve1,
                                           sync.token0, sync.token1) == ("sync", 11, 22, T0, T1)
    (swap,) = log_records(_log(POOL, [SWAP, _topic(BOB), _topic(ALICE)], [0, 3, 4, 0]), 7,
                          pools)
    assert isinstance(swap, DexEvent) and (swap.kind, swap.amount1_in, swap.amount0_out,
                                           swap.to) == ("swap", 3, 4, ALICE)
    assert swap.item_id == "log_0x" + "ee" * 32 + "_3"
    assert log_records(_log("0x" + "cc" * 20, [SYNC], [1, 2]), 7, pools) == []  # no pair
    nft = _log(T0, [TRANSFER, _topic(ALICE), _topic(BOB), _word(1)], [])
    assert log_records(nft, 7, pools) == []  # ERC-721: four topics, no data


class _Flaky:
    """A transport failing the first ``failures`` calls with ``error``."""

    def __init__(self, failures: int, error: Exception | dict[str, Any]) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def request(self, method: str, params: list[Any]) -> dict[str, Any]:
        return self.batch([(method, params)])[0]

    def batch(self, calls: Any) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls <= self.failures:
            if isinstance(self.error, Exception):
                raise self.error
            return [{"jsonrpc": "2.0", "id": i, "error": self.error} for i, _ in
                    enumerate(calls)]
        return [{"jsonrpc": "2.0", "id": i, "result": "0x1"} for i, _ in enumerate(calls)]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("error", [
    ConnectionError("Connection refused"), TimeoutError("read timed out"),
    {"code": -32005, "message": "daily request count exceeded"},
    {"code": 429, "message": "Too Many Requests"}])
def test_transient_failures_are_retried_with_backoff(error: Exception | dict[str, Any]) -> None:
    slept: list[float] = []
    summary = RpcSummary("n", 1)
    rpc = Rpc(_Flaky(4, error), "http://node", rate=1e9, max_retries=5, summary=summary,
              sleep=slept.append)
    assert rpc.call("eth_blockNumber") == "0x1"
    assert summary.retries == 4
    assert [s for s in slept if s >= 0.5] == [0.5, 1.0, 2.0, 4.0]


def test_retries_end_in_one_line_and_other_errors_are_not_retried() -> None:
    rpc = Rpc(_Flaky(99, ConnectionError("refused")), "http://node", rate=1e9, max_retries=2,
              summary=RpcSummary("n", 1), sleep=lambda s: None)
    with pytest.raises(SourceError, match="still fails after 2 retries"):
        rpc.call("eth_blockNumber")
    flat = _Flaky(99, {"code": -32602, "message": "invalid params"})
    rpc = Rpc(flat, "http://node", rate=1e9, max_retries=5, summary=RpcSummary("n", 1),
              sleep=lambda s: None)
    with pytest.raises(Exception, match="invalid params"):
        rpc.call("eth_getBlockByNumber", "0x1", True)
    assert flat.calls == 1


def test_requests_are_paced_to_the_rate() -> None:
    now = [100.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    rpc = Rpc(_Flaky(0, {}), "http://node", rate=10.0, max_retries=0,
              summary=RpcSummary("n", 1), sleep=sleep, clock=lambda: now[0])
    for _ in range(5):
        rpc.batch([("eth_blockNumber", []), ("eth_chainId", [])])  # 2 requests each
    assert now[0] - 100.0 == pytest.approx(0.8)  # 10 requests at 10/s: the last at 0.8 s


def test_no_key_in_a_url_or_an_error_is_ever_shown() -> None:
    url = "https://user:pw@mainnet.example/v3/0123456789abcdef?key=s3cret"
    assert shown_url(url) == "https://mainnet.example"
    text = _scrub(f"HTTPSConnectionPool(host='mainnet.example', port=443): Max retries "
                  f"exceeded with url: /v3/0123456789abcdef?key=s3cret (Caused by {url})")
    assert "0123456789abcdef" not in text and "s3cret" not in text and "pw" not in text


def test_the_cursor_round_trips_and_refuses_garbage(tmp_path: Path) -> None:
    cursor = RpcCursor(tmp_path / "c.json")
    assert cursor.load() is None
    st = CursorState(31337, 42, kept=[Kept(41, "0x" + "11" * 32, ["chain.dex"])],
                     pending=[Kept(42, "0x" + "22" * 32, [])], pools={POOL: (T0, T1)})
    cursor.save(st)
    assert cursor.load() == st
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temporary file left
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(SourceError, match=r"unreadable.*delete it"):
        cursor.load()
